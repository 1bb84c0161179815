"""Seeing what the bus does: listeners, and dead letters.

A *listener* is told of every message the bus dispatches and of every handler
attempt; the testing kit's recorder is one, and so could be metrics. A
*dead-letter store* keeps the handlings the bus gave up on, so that none is
lost: ``MessageBus(dead_letters=store)``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import threading
from collections.abc import Awaitable
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from .exceptions import ConfigurationError
from .messages import Message, Metadata

__all__ = [
    "Attempt",
    "DeadLetter",
    "DeadLetterStore",
    "InMemoryDeadLetters",
    "Listener",
    "check_store_for_async",
]

Outcome = Literal["succeeded", "retrying", "failed"]


@attrs.frozen
class Attempt:
    """One handler attempt, as a listener sees it.

    Attributes:
        message: The message handled.
        metadata: Its metadata.
        handler: The handler's name (``module.qualname``).
        attempt: 1 for the first attempt, 2 for the first retry, ...
        outcome: ``"succeeded"``; ``"retrying"`` (it failed and will be tried
            again); or ``"failed"`` (the bus gave up).
        error: The exception of a failed attempt.
        duration_s: How long the attempt took.
    """

    message: Message
    metadata: Metadata
    handler: str
    attempt: int
    outcome: Outcome
    error: BaseException | None = None
    duration_s: float | None = None


@runtime_checkable
class Listener(Protocol):
    """Told of what the bus does; its methods must be quick and must not raise."""

    def message_dispatched(self, message: Message, metadata: Metadata) -> None:
        """A message is about to be handled (a command, or an event raised or given)."""

    def attempt_finished(self, attempt: Attempt) -> None:
        """A handler attempt has finished."""


@attrs.frozen
class DeadLetter:
    """A handling the bus gave up on, kept as data so that it can be stored and retried.

    Attributes:
        message_name: The message's stable name.
        message_version: Its schema version.
        payload: Its fields, as :class:`~messagebus.Serializer` dumps them.
        metadata: Its metadata, as :class:`~messagebus.Serializer` dumps it.
        handler: The name of the handler that failed.
        error: The last error, as ``Type: text``.
        traceback: The last error's traceback.
        attempts: How many attempts were made.
        failed_at: When the bus gave up (aware, UTC).
    """

    message_name: str
    message_version: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    handler: str
    error: str
    traceback: str
    attempts: int
    failed_at: _dt.datetime

    def wire(self) -> dict[str, Any]:
        """The message in :meth:`~messagebus.Serializer.load_with_metadata` form."""
        return {
            "name": self.message_name,
            "version": self.message_version,
            "payload": self.payload,
            "metadata": self.metadata,
        }


@runtime_checkable
class DeadLetterStore(Protocol):
    """Where the bus puts the handlings it gave up on.

    The async bus awaits :meth:`add` when it returns an awaitable.
    """

    def add(self, letter: DeadLetter) -> Awaitable[None] | None:
        """Keep a dead letter. It must not be lost: raise if it cannot be kept."""


def check_store_for_async(store: object) -> None:
    """Refuse, naming it, a dead-letter store that would block an event loop.

    An :class:`~messagebus.AsyncMessageBus` awaits its store's ``add``. A store
    whose ``add`` is a plain function is accepted only when it says that it
    does not block (a class attribute ``blocking = False``, as the in-memory
    stores have); a store that says it blocks (``blocking = True``, as
    ``messagebus.sqlalchemy.SqlAlchemyDeadLetterStore``), or says nothing, is
    refused: its writes would stall every task of the loop while the
    database answers.

    Raises:
        ConfigurationError: The store's ``add`` blocks, or it has none.
    """
    add = getattr(store, "add", None)
    name = type(store).__qualname__
    if not callable(add):
        raise ConfigurationError(f"the dead-letter store {name} has no add() method")
    target: object = add
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - an object's own method
    ):
        return
    if getattr(store, "blocking", True) is False:
        return
    hint = (
        "use messagebus.sqlalchemy.AsyncSqlAlchemyDeadLetterStore on an AsyncEngine"
        if getattr(store, "blocking", None) is True
        else "make its add() `async def`, or set `blocking = False` on a store that "
        "never waits (memory only)"
    )
    raise ConfigurationError(
        f"AsyncMessageBus awaits its dead-letter store, and {name}.add() blocks the "
        f"event loop: {hint}"
    )


class InMemoryDeadLetters:
    """A dead-letter store in memory, for tests and small tools."""

    #: It never waits: an async bus may use it (:func:`check_store_for_async`).
    blocking = False

    def __init__(self) -> None:
        self._letters: list[DeadLetter] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        with self._lock:
            count = len(self._letters)
        return f"<InMemoryDeadLetters letters={count}>"

    def add(self, letter: DeadLetter) -> None:
        """Keep a dead letter."""
        with self._lock:
            self._letters.append(letter)

    @property
    def letters(self) -> list[DeadLetter]:
        """The dead letters kept, oldest first (a copy)."""
        with self._lock:
            return list(self._letters)
