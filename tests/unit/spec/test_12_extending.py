"""DESIGN.md §12, Extending: what listens to a dispatch, on both buses.

Listeners are told of every message dispatched and of every handler attempt.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import attrs

from messagebus import Command, Context, Event, Metadata

from ._buses import Harness


@attrs.frozen
class Allocate(Command[str]):
    sku: str


@attrs.frozen
class Allocated(Event):
    sku: str


class Recording:
    def __init__(self) -> None:
        self.dispatched: list[tuple[str, Any]] = []
        self.attempts: list[tuple[str, int, str]] = []

    def message_dispatched(self, message: Any, metadata: Metadata) -> None:
        self.dispatched.append((type(message).__name__, metadata.causation_id))

    def attempt_finished(self, attempt: Any) -> None:
        self.attempts.append((attempt.handler.rsplit(".", 1)[-1], attempt.attempt, attempt.outcome))


def test_listeners_are_told_of_every_message_and_every_attempt(h: Harness) -> None:
    listener = Recording()
    calls: list[int] = []

    @h.register
    def allocate(cmd: Allocate, context: Context, metadata: Metadata) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("busy")
        context.emit(Allocated(cmd.sku))
        return str(metadata.message_id)

    @h.register
    def on_allocated(event: Allocated) -> None:
        raise ValueError("broken")

    h.build(listeners=[listener])
    command_id = h.handle(Allocate("lamp"))

    assert [("Allocate", None), ("Allocated", UUID(command_id))] == listener.dispatched
    assert [
        ("allocate", 1, "retrying"),
        ("allocate", 2, "succeeded"),
        ("on_allocated", 1, "failed"),
    ] == listener.attempts
