"""Dead letters: list, show, retry and purge the handlings the bus gave up on.

A bus built with ``dead_letters=store`` stores every event handling that
failed after its retries (and every failed command, with
``dead_letter_commands=True``) as a :class:`~messagebus.observe.DeadLetter`.
A *managed* store (:class:`ManagedDeadLetterStore`) also gives each letter an
id and keeps its state; :class:`DeadLetters` works on one::

    from messagebus.dead_letters import DeadLetters, InMemoryDeadLetterStore
    from messagebus.sqlalchemy import SqlAlchemyDeadLetterStore  # in the app's database

    letters = DeadLetters(store, bus)
    for stored in letters.list():
        print(stored.id, stored.letter.message_name, stored.letter.error)
    letters.retry(12)                  # one
    letters.retry_type("Allocated")    # every pending letter of one message type
    letters.retry_all()                # every pending letter
    letters.purge(resolved=True)       # the only way a letter is ever deleted

A retry hands the stored message, with its original metadata (the same
message id), to the handler that failed, and to that handler only
(``bus.redeliver``); the events it raises are dispatched as usual. A retry
that succeeds marks the letter resolved (kept, with the time); one that fails
records its error on the letter, which stays pending. Nothing is deleted
except by :meth:`DeadLetters.purge`.

Retries are at least once: a handler that succeeds while the store cannot
mark its letter resolved (the database is gone) will run again on the next
retry. Do not retry the same letters from two processes at once.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import threading
import traceback as _traceback
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from ._async_bus import AsyncMessageBus
from ._bus import MessageBus
from .exceptions import MessageBusError
from .messages import Message, Metadata
from .observe import DeadLetter

__all__ = [
    "AsyncDeadLetters",
    "DeadLetterNotFoundError",
    "DeadLetters",
    "InMemoryDeadLetterStore",
    "ManagedDeadLetterStore",
    "RetryOutcome",
    "RetryResult",
    "StoredDeadLetter",
]


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class DeadLetterNotFoundError(MessageBusError, LookupError):
    """No dead letter has this id.

    Attributes:
        letter_id: The id asked for.
    """

    def __init__(self, letter_id: int) -> None:
        self.letter_id = letter_id
        super().__init__(f"no dead letter has the id {letter_id}")


@attrs.frozen
class StoredDeadLetter:
    """A dead letter as a managed store keeps it: an id, and what became of it.

    Attributes:
        id: Its id in the store.
        letter: What the bus stored: message, metadata, handler, error, traceback,
            attempts and the time it gave up.
        resolved_at: When a retry succeeded; None while it is pending.
        retries: How many times it was retried.
        last_retried_at: When it was last retried.
        last_error: The error of the last retry that failed (``letter.error``
            keeps the original one).
        last_traceback: That retry's traceback.
    """

    id: int
    letter: DeadLetter
    resolved_at: _dt.datetime | None = None
    retries: int = 0
    last_retried_at: _dt.datetime | None = None
    last_error: str | None = None
    last_traceback: str | None = None

    @property
    def resolved(self) -> bool:
        """A retry has succeeded."""
        return self.resolved_at is not None

    @property
    def status(self) -> Literal["pending", "resolved"]:
        """``"resolved"`` once a retry has succeeded, ``"pending"`` until then."""
        return "resolved" if self.resolved_at is not None else "pending"

    @property
    def message_id(self) -> str | None:
        """The message id of the letter's message, as stored."""
        value = self.letter.metadata.get("message_id")
        return value if isinstance(value, str) else None


@runtime_checkable
class ManagedDeadLetterStore(Protocol):
    """A dead-letter store that gives each letter an id and keeps its state.

    The bus only calls :meth:`add`; :class:`DeadLetters` calls the rest.
    :class:`InMemoryDeadLetterStore` and
    ``messagebus.sqlalchemy.SqlAlchemyDeadLetterStore`` are two.
    """

    def add(self, letter: DeadLetter) -> None:
        """Keep a dead letter, pending. It must not be lost: raise if it cannot be kept."""

    def list(
        self,
        *,
        message_name: str | None = None,
        handler: str | None = None,
        resolved: bool | None = False,
        limit: int | None = None,
    ) -> list[StoredDeadLetter]:
        """Letters, oldest first: pending ones (``resolved=False``), resolved ones
        (True) or both (None); of one message name and handler when given."""

    def get(self, letter_id: int) -> StoredDeadLetter | None:
        """The letter with this id, or None."""

    def mark_resolved(self, letter_id: int, *, at: _dt.datetime) -> None:
        """A retry succeeded at ``at``: count it, and mark the letter resolved."""

    def mark_retry_failed(
        self, letter_id: int, *, error: str, traceback: str, at: _dt.datetime
    ) -> None:
        """A retry failed at ``at``: count it, and keep its error; the letter stays pending."""

    def purge(
        self,
        *,
        ids: Iterable[int] | None = None,
        message_name: str | None = None,
        resolved: bool | None = None,
    ) -> int:
        """Delete the letters that match every filter given (all of them when none
        is); return how many were deleted."""


class InMemoryDeadLetterStore:
    """A managed dead-letter store in memory, for tests and small tools."""

    def __init__(self) -> None:
        self._letters: dict[int, StoredDeadLetter] = {}
        self._next_id = 1
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        with self._lock:
            letters = list(self._letters.values())
        pending = sum(1 for stored in letters if stored.resolved_at is None)
        return f"<InMemoryDeadLetterStore letters={len(letters)} pending={pending}>"

    def add(self, letter: DeadLetter) -> None:
        """Keep a dead letter, pending, under the next id."""
        with self._lock:
            self._letters[self._next_id] = StoredDeadLetter(self._next_id, letter)
            self._next_id += 1

    def list(
        self,
        *,
        message_name: str | None = None,
        handler: str | None = None,
        resolved: bool | None = False,
        limit: int | None = None,
    ) -> list[StoredDeadLetter]:
        """As :meth:`ManagedDeadLetterStore.list`."""
        with self._lock:
            found = [
                stored
                for stored in self._letters.values()
                if _matches(stored, message_name, handler, resolved)
            ]
        return found if limit is None else found[:limit]

    def get(self, letter_id: int) -> StoredDeadLetter | None:
        """The letter with this id, or None."""
        with self._lock:
            return self._letters.get(letter_id)

    def mark_resolved(self, letter_id: int, *, at: _dt.datetime) -> None:
        """As :meth:`ManagedDeadLetterStore.mark_resolved`."""
        self._update(
            letter_id,
            lambda s: {"resolved_at": at, "last_retried_at": at, "retries": s.retries + 1},
        )

    def mark_retry_failed(
        self, letter_id: int, *, error: str, traceback: str, at: _dt.datetime
    ) -> None:
        """As :meth:`ManagedDeadLetterStore.mark_retry_failed`."""
        self._update(
            letter_id,
            lambda s: {
                "retries": s.retries + 1,
                "last_retried_at": at,
                "last_error": error,
                "last_traceback": traceback,
            },
        )

    def purge(
        self,
        *,
        ids: Iterable[int] | None = None,
        message_name: str | None = None,
        resolved: bool | None = None,
    ) -> int:
        """As :meth:`ManagedDeadLetterStore.purge`."""
        wanted = None if ids is None else set(ids)
        with self._lock:
            doomed = [
                letter_id
                for letter_id, stored in self._letters.items()
                if (wanted is None or letter_id in wanted)
                and _matches(stored, message_name, None, resolved)
            ]
            for letter_id in doomed:
                del self._letters[letter_id]
        return len(doomed)

    def _update(
        self, letter_id: int, changes: Callable[[StoredDeadLetter], dict[str, Any]]
    ) -> None:
        with self._lock:
            stored = self._letters.get(letter_id)
            if stored is None:
                raise DeadLetterNotFoundError(letter_id)
            self._letters[letter_id] = attrs.evolve(stored, **changes(stored))


def _matches(
    stored: StoredDeadLetter, message_name: str | None, handler: str | None, resolved: bool | None
) -> bool:
    return (
        (message_name is None or stored.letter.message_name == message_name)
        and (handler is None or stored.letter.handler == handler)
        and (resolved is None or stored.resolved is resolved)
    )


RetryOutcome = Literal["resolved", "failed", "already_resolved"]


@attrs.frozen
class RetryResult:
    """What became of one retried dead letter.

    Attributes:
        letter_id: The letter's id.
        outcome: ``"resolved"`` (the handler succeeded; the letter is marked
            resolved), ``"failed"`` (the letter stays pending, with this error)
            or ``"already_resolved"`` (nothing was done).
        error: Why it failed, as ``Type: text``.
    """

    letter_id: int
    outcome: RetryOutcome
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The letter is resolved (now or before)."""
        return self.outcome != "failed"


class _Base:
    """What both APIs share: everything but the awaiting of a redelivery."""

    def __init__(
        self,
        store: ManagedDeadLetterStore,
        bus: MessageBus | AsyncMessageBus,
        *,
        clock: Callable[[], _dt.datetime] = _utcnow,
    ) -> None:
        missing = [
            name
            for name in ("add", "list", "get", "mark_resolved", "mark_retry_failed", "purge")
            if not callable(getattr(store, name, None))
        ]
        if missing:
            raise TypeError(
                f"{type(store).__qualname__} is not a managed dead-letter store "
                f"(it has no {', '.join(missing)}): use InMemoryDeadLetterStore or "
                "messagebus.sqlalchemy.SqlAlchemyDeadLetterStore"
            )
        self.store = store
        self.bus = bus
        self._clock = clock

    def list(
        self,
        *,
        message_name: str | None = None,
        handler: str | None = None,
        resolved: bool | None = False,
        limit: int | None = None,
    ) -> builtins.list[StoredDeadLetter]:
        """Dead letters, oldest first; by default the pending ones.

        Args:
            message_name: Only letters of this message name.
            handler: Only letters of this handler (``module.qualname``).
            resolved: False for pending letters, True for resolved ones, None for both.
            limit: At most this many.
        """
        return self.store.list(
            message_name=message_name, handler=handler, resolved=resolved, limit=limit
        )

    def show(self, letter_id: int) -> StoredDeadLetter:
        """One dead letter, with all that is kept of it.

        Raises:
            DeadLetterNotFoundError: No letter has this id.
        """
        stored = self.store.get(letter_id)
        if stored is None:
            raise DeadLetterNotFoundError(letter_id)
        return stored

    def purge(
        self,
        ids: Iterable[int] | None = None,
        *,
        message_name: str | None = None,
        resolved: bool | None = None,
        everything: bool = False,
    ) -> int:
        """Delete dead letters: those matching every filter given. Returns how many.

        Args:
            ids: These letters.
            message_name: Letters of this message name.
            resolved: True for resolved letters only, False for pending ones only.
            everything: Delete every letter; required when no filter is given,
                so that a forgotten filter does not empty the store.

        Raises:
            ValueError: Neither a filter nor ``everything=True`` was given.
        """
        ids = None if ids is None else list(ids)
        if ids is None and message_name is None and resolved is None and not everything:
            raise ValueError(
                "purge() deletes dead letters for good: give ids, message_name or "
                "resolved, or everything=True"
            )
        return self.store.purge(ids=ids, message_name=message_name, resolved=resolved)

    def _pending(self, message_name: str | None) -> builtins.list[StoredDeadLetter]:
        return self.store.list(message_name=message_name, resolved=False)

    def _prepare(self, stored: StoredDeadLetter) -> RetryResult | tuple[Message, Metadata | None]:
        """The message to redeliver, or the result when there is none."""
        if stored.resolved:
            return RetryResult(stored.id, "already_resolved")
        try:
            return self.bus.serializer.load_with_metadata(stored.letter.wire())
        except Exception as exc:  # the type is gone, or its schema changed
            return self._failed(stored, exc)

    def _failed(self, stored: StoredDeadLetter, error: BaseException) -> RetryResult:
        text = f"{type(error).__qualname__}: {error}"
        self.store.mark_retry_failed(
            stored.id,
            error=text,
            traceback="".join(_traceback.format_exception(type(error), error, error.__traceback__)),
            at=self._clock(),
        )
        return RetryResult(stored.id, "failed", text)

    def _resolved(self, stored: StoredDeadLetter) -> RetryResult:
        self.store.mark_resolved(stored.id, at=self._clock())
        return RetryResult(stored.id, "resolved")


class DeadLetters(_Base):
    """List, show, retry and purge the dead letters of a :class:`~messagebus.MessageBus`.

    Args:
        store: The managed store the bus was built with (``dead_letters=store``).
        bus: The bus whose handlers retry the letters; its serializer must
            know their message types.
        clock: The time of retries (aware, UTC); tests pass their own.
    """

    def __init__(
        self,
        store: ManagedDeadLetterStore,
        bus: MessageBus,
        *,
        clock: Callable[[], _dt.datetime] = _utcnow,
    ) -> None:
        if not isinstance(bus, MessageBus):
            raise TypeError(f"DeadLetters retries with a MessageBus, not {bus!r}")
        super().__init__(store, bus, clock=clock)
        self._bus = bus

    def retry(self, letter_id: int) -> RetryResult:
        """Hand one letter's message to the handler that failed, again.

        Raises:
            DeadLetterNotFoundError: No letter has this id.
        """
        return self._retry(self.show(letter_id))

    def retry_type(self, message_name: str) -> builtins.list[RetryResult]:
        """Retry every pending letter of one message name, oldest first."""
        return [self._retry(stored) for stored in self._pending(message_name)]

    def retry_all(self) -> builtins.list[RetryResult]:
        """Retry every pending letter, oldest first (those stored meanwhile wait)."""
        return [self._retry(stored) for stored in self._pending(None)]

    def _retry(self, stored: StoredDeadLetter) -> RetryResult:
        prepared = self._prepare(stored)
        if isinstance(prepared, RetryResult):
            return prepared
        message, metadata = prepared
        try:
            self._bus.redeliver(message, handler=stored.letter.handler, metadata=metadata)
        except Exception as exc:
            return self._failed(stored, exc)
        return self._resolved(stored)


class AsyncDeadLetters(_Base):
    """As :class:`DeadLetters`, for an :class:`~messagebus.AsyncMessageBus`: retries are awaited.

    The store's methods are called as they are (a SQLAlchemy store blocks the
    event loop while it reads or writes a letter).
    """

    def __init__(
        self,
        store: ManagedDeadLetterStore,
        bus: AsyncMessageBus,
        *,
        clock: Callable[[], _dt.datetime] = _utcnow,
    ) -> None:
        if not isinstance(bus, AsyncMessageBus):
            raise TypeError(f"AsyncDeadLetters retries with an AsyncMessageBus, not {bus!r}")
        super().__init__(store, bus, clock=clock)
        self._bus = bus

    async def retry(self, letter_id: int) -> RetryResult:
        """As :meth:`DeadLetters.retry`, awaited."""
        return await self._retry(self.show(letter_id))

    async def retry_type(self, message_name: str) -> builtins.list[RetryResult]:
        """As :meth:`DeadLetters.retry_type`, awaited."""
        return [await self._retry(stored) for stored in self._pending(message_name)]

    async def retry_all(self) -> builtins.list[RetryResult]:
        """As :meth:`DeadLetters.retry_all`, awaited."""
        return [await self._retry(stored) for stored in self._pending(None)]

    async def _retry(self, stored: StoredDeadLetter) -> RetryResult:
        prepared = self._prepare(stored)
        if isinstance(prepared, RetryResult):
            return prepared
        message, metadata = prepared
        try:
            await self._bus.redeliver(message, handler=stored.letter.handler, metadata=metadata)
        except Exception as exc:
            return self._failed(stored, exc)
        return self._resolved(stored)
