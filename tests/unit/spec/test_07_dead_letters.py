"""DESIGN.md §3 and §7, Dead letters: event handlings given up on are stored, on both buses.

A failed event handling, after its retries, is stored where a store is
configured; a failed command only when asked; a stored letter can be
redelivered to its one handler; a store that is down loses nothing.
The stores themselves are tested in ``tests/unit/test_dead_letters.py``.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import attrs
import pytest
import structlog
import tenacity

from messagebus import Command, Context, DispatchError, Event, Metadata, RetryPolicy
from messagebus.observe import InMemoryDeadLetters

from ._buses import Harness
from ._loggers import quiet_logger, unwritable_logger


@attrs.frozen
class Allocate(Command[str]):
    sku: str


@attrs.frozen
class Allocated(Event):
    sku: str
    n: int = 0


@attrs.frozen
class Noted(Event):
    n: int


def test_an_event_handling_given_up_on_is_stored_as_a_dead_letter(
    h: Harness, logger: object
) -> None:
    store = InMemoryDeadLetters()

    @h.register(uow=False)
    def on_allocated(event: Allocated) -> None:
        raise ValueError("no such warehouse")

    h.build(logger=logger, dead_letters=store)
    given = Metadata.new()
    h.handle(Allocated("lamp", 3), metadata=given)

    [letter] = store.letters
    assert ("Allocated", 1, {"sku": "lamp", "n": 3}) == (
        letter.message_name,
        letter.message_version,
        letter.payload,
    )
    assert letter.handler.endswith("on_allocated")
    assert (1, "ValueError: no such warehouse") == (letter.attempts, letter.error)
    assert "no such warehouse" in letter.traceback
    assert (Allocated("lamp", 3), given) == h.bus.serializer.load_with_metadata(letter.wire())


def test_a_failed_command_is_a_dead_letter_only_when_asked(h: Harness, logger: object) -> None:
    store = InMemoryDeadLetters()

    @h.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        raise KeyError(cmd.sku)

    h.build(logger=logger, dead_letters=store)
    with pytest.raises(KeyError):
        h.handle(Allocate("lamp"))
    assert [] == store.letters

    h.build(logger=logger, dead_letters=store, dead_letter_commands=True)
    with pytest.raises(KeyError):
        h.handle(Allocate("lamp"))
    assert ["Allocate"] == [letter.message_name for letter in store.letters]


def test_redelivery_runs_only_the_named_handler_and_stores_no_new_letter(
    h: Harness, logger: object
) -> None:
    store = InMemoryDeadLetters()
    handled: list[str] = []
    fixed = [False]

    @h.register(uow=False)
    def first(event: Allocated) -> None:
        handled.append("first")

    @h.register(uow=False)
    def second(event: Allocated) -> None:
        if not fixed[0]:
            raise ValueError("bug")
        handled.append("second")

    h.build(logger=logger, dead_letters=store)
    h.handle(Allocated("lamp"))
    [letter] = store.letters
    message, metadata = h.bus.serializer.load_with_metadata(letter.wire())

    with pytest.raises(ValueError, match="bug"):
        h.redeliver(message, handler=letter.handler, metadata=metadata)
    fixed[0] = True
    h.redeliver(message, handler=letter.handler, metadata=metadata)

    assert ["first", "second"] == handled
    assert 1 == len(store.letters)
    with pytest.raises(DispatchError, match="nobody"):
        h.redeliver(message, handler="nobody")


class RefusingStore(InMemoryDeadLetters):
    """A dead-letter store that is down."""

    def add(self, letter: Any) -> None:
        raise ConnectionError("the store is down")


def test_a_letter_the_store_refuses_is_logged_whole_and_handling_goes_on(h: Harness) -> None:
    handled: list[str] = []

    @h.register(uow=False)
    def broken(event: Allocated) -> None:
        raise ValueError("bug")

    @h.register(uow=False)
    def fine(event: Allocated) -> None:
        handled.append(event.sku)

    with structlog.testing.capture_logs() as logs:
        h.build(uow=None, dead_letters=RefusingStore())
        h.handle(Allocated("lamp"))

    assert ["lamp"] == handled
    (refused,) = [line for line in logs if line["event"] == "dead_letter_store_failed"]
    assert {
        "message_name": "Allocated",
        "handler": f"{__name__}.test_a_letter_the_store_refuses_is_logged_whole_and_handling"
        "_goes_on.<locals>.broken",
        "payload": {"sku": "lamp", "n": 0},
        "error": "ValueError: bug",
    }.items() <= refused.items()


def test_a_refused_letter_that_cannot_be_logged_either_goes_to_stderr(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    @h.register(uow=False)
    def broken(event: Allocated) -> None:
        raise ValueError("bug")

    h.build(uow=None, dead_letters=RefusingStore(), logger=unwritable_logger())
    h.handle(Allocated("lamp"))

    err = capsys.readouterr().err
    assert "could not write the log line 'dead_letter_store_failed'" in err
    assert "messagebus: the dead letter: DeadLetter(message_name='Allocated'" in err
    assert "'sku': 'lamp'" in err


def test_a_raised_event_given_up_on_is_a_dead_letter_naming_its_command_as_cause(
    h: Harness,
) -> None:
    store = InMemoryDeadLetters()
    calls: list[int] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Noted(1))
        context.emit(Noted(2))
        return "ok"

    @h.register(uow=False)
    def on_noted(event: Noted) -> None:
        calls.append(event.n)
        if event.n == 1:
            raise ConnectionError("reset")  # transient: retried, then given up

    h.build(
        logger=quiet_logger(),
        uow=None,
        dead_letters=store,
        retry=RetryPolicy(stop=tenacity.stop_after_attempt(2)),
    )
    command_id = UUID(int=7)
    metadata = Metadata(command_id, command_id, None, Metadata.new().created_at)

    assert "ok" == h.handle(Allocate("lamp"), metadata=metadata)

    assert [1, 1, 2] == calls
    (letter,) = store.letters
    assert ("Noted", 2) == (letter.message_name, letter.attempts)
    assert str(command_id) == letter.metadata["causation_id"]
    assert str(command_id) == letter.metadata["correlation_id"]
