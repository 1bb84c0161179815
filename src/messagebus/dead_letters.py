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

Each letter is *claimed* before it is retried, where the store can claim
(both stores here can): a lease of ``lease`` (5 minutes by default) that one
retrier holds until the retry's outcome is marked. Two ``retry_all()`` at
once, in two processes, retry each letter once: the one that finds a letter
claimed by the other skips it (``"skipped"``). A letter purged while a batch
runs is skipped with a note, and the batch goes on. Retries are still at least
once: a handler that succeeds while the store cannot mark its letter resolved
(the database is gone) runs again on a retry after the lease.

A letter that the store could not write (the database was down longer than
its retries) is kept in a spool file where the store has one
(:class:`DeadLetterSpool`); :func:`import_dead_letters` (``messagebus
dead-letters import FILE``) brings spooled letters, and the bus's
``dead_letter_store_failed`` log lines, back into the store.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import inspect
import json
import os
import threading
import traceback as _traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import attrs

from ._async_bus import AsyncMessageBus
from ._bus import MessageBus
from ._sensitive import REDACTED, holds_sensitive
from .exceptions import MessageBusError
from .messages import Message, Metadata
from .observe import DeadLetter
from .serialization import Serializer

__all__ = [
    "AsyncDeadLetters",
    "DeadLetterNotFoundError",
    "DeadLetterSpool",
    "DeadLetters",
    "ImportReport",
    "InMemoryDeadLetterStore",
    "ManagedDeadLetterStore",
    "RetryOutcome",
    "RetryResult",
    "StoredDeadLetter",
    "import_dead_letters",
    "import_dead_letters_async",
]

_T = TypeVar("_T")
#: The event of a letter that could not be stored: the bus's log line, and each spool line.
STORE_FAILED = "dead_letter_store_failed"


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

    #: It never waits: an async bus may use it.
    blocking = False

    def __init__(self) -> None:
        self._letters: dict[int, StoredDeadLetter] = {}
        self._claims: dict[int, tuple[str, _dt.datetime]] = {}
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

    def contains(self, letter: DeadLetter) -> bool:
        """Whether this letter is stored already."""
        with self._lock:
            return any(stored.letter == letter for stored in self._letters.values())

    def claim(
        self, letter_id: int, *, owner: str, now: _dt.datetime, until: _dt.datetime
    ) -> StoredDeadLetter | None:
        """Claim a pending letter until ``until``; None when resolved or claimed by another.

        Raises:
            DeadLetterNotFoundError: No letter has this id.
        """
        with self._lock:
            stored = self._letters.get(letter_id)
            if stored is None:
                raise DeadLetterNotFoundError(letter_id)
            held = self._claims.get(letter_id)
            if stored.resolved or (held is not None and held[1] > now):
                return None
            self._claims[letter_id] = (owner, until)
            return stored

    def release(self, letter_id: int, *, owner: str) -> None:
        """Give up a claim without a retry's outcome."""
        with self._lock:
            if self._claims.get(letter_id, ("", None))[0] == owner:
                del self._claims[letter_id]

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
            self._claims.pop(letter_id, None)  # a retry's outcome ends its claim


def _matches(
    stored: StoredDeadLetter, message_name: str | None, handler: str | None, resolved: bool | None
) -> bool:
    return (
        (message_name is None or stored.letter.message_name == message_name)
        and (handler is None or stored.letter.handler == handler)
        and (resolved is None or stored.resolved is resolved)
    )


RetryOutcome = Literal["resolved", "failed", "already_resolved", "skipped"]


@attrs.frozen
class RetryResult:
    """What became of one retried dead letter.

    Attributes:
        letter_id: The letter's id.
        outcome: ``"resolved"`` (the handler succeeded; the letter is marked
            resolved), ``"failed"`` (the letter stays pending, with this error),
            ``"already_resolved"`` (nothing was done) or ``"skipped"`` (another
            retrier holds it, or it was purged: see ``note``).
        error: Why it failed, as ``Type: text``.
        note: Why it was skipped, or what else happened (purged while it was retried).
    """

    letter_id: int
    outcome: RetryOutcome
    error: str | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing failed: the letter is resolved (now or before), or was skipped."""
        return self.outcome != "failed"


_PURGED_BEFORE = "purged before it was retried"
_PURGED_DURING = "purged while it was retried"
_CLAIMED = "another retrier is retrying it"
#: How long a retrier's claim on a letter lasts unless its outcome is marked first.
DEFAULT_LEASE = _dt.timedelta(minutes=5)


class _Base:
    """What both APIs share: everything but the calling of the store and the bus."""

    def __init__(
        self,
        store: ManagedDeadLetterStore,
        bus: MessageBus | AsyncMessageBus,
        *,
        clock: Callable[[], _dt.datetime] = _utcnow,
        lease: _dt.timedelta = DEFAULT_LEASE,
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
        self._lease = lease
        #: Who this retrier is, in the claims it takes.
        self.owner = uuid.uuid4().hex

    @staticmethod
    def _purge_args(
        ids: Iterable[int] | None, message_name: str | None, resolved: bool | None, everything: bool
    ) -> builtins.list[int] | None:
        listed = None if ids is None else builtins.list(ids)
        if listed is None and message_name is None and resolved is None and not everything:
            raise ValueError(
                "purge() deletes dead letters for good: give ids, message_name or "
                "resolved, or everything=True"
            )
        return listed

    def _load(self, stored: StoredDeadLetter) -> tuple[Message, Metadata | None] | Exception:
        """The message to redeliver, or why there is none."""
        try:
            return self.bus.serializer.load_with_metadata(stored.letter.wire())
        except Exception as exc:  # the type is gone, or its schema changed
            return exc

    def _claim_args(self) -> dict[str, Any]:
        now = self._clock()
        return {"owner": self.owner, "now": now, "until": now + self._lease}

    @staticmethod
    def _unclaimed(letter_id: int, now: StoredDeadLetter | None) -> RetryResult:
        """The result for a letter that could not be claimed, given how it is now."""
        if now is None:
            return RetryResult(letter_id, "skipped", note=_PURGED_BEFORE)
        if now.resolved:
            return RetryResult(letter_id, "already_resolved")
        return RetryResult(letter_id, "skipped", note=_CLAIMED)


def _error_text(error: BaseException) -> tuple[str, str]:
    return (
        f"{type(error).__qualname__}: {error}",
        "".join(_traceback.format_exception(type(error), error, error.__traceback__)),
    )


class DeadLetters(_Base):
    """List, show, retry and purge the dead letters of a :class:`~messagebus.MessageBus`.

    Args:
        store: The managed store the bus was built with (``dead_letters=store``).
        bus: The bus whose handlers retry the letters; its serializer must
            know their message types.
        clock: The time of retries (aware, UTC); tests pass their own.
        lease: How long a claim on a letter lasts (see the module's docs).
    """

    def __init__(
        self,
        store: ManagedDeadLetterStore,
        bus: MessageBus,
        *,
        clock: Callable[[], _dt.datetime] = _utcnow,
        lease: _dt.timedelta = DEFAULT_LEASE,
    ) -> None:
        if not isinstance(bus, MessageBus):
            raise TypeError(f"DeadLetters retries with a MessageBus, not {bus!r}")
        super().__init__(store, bus, clock=clock, lease=lease)
        self._bus = bus

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
        listed = self._purge_args(ids, message_name, resolved, everything)
        return self.store.purge(ids=listed, message_name=message_name, resolved=resolved)

    def retry(self, letter_id: int) -> RetryResult:
        """Hand one letter's message to the handler that failed, again.

        Raises:
            DeadLetterNotFoundError: No letter has this id.
        """
        return self._retry(self.show(letter_id))

    def retry_type(self, message_name: str) -> builtins.list[RetryResult]:
        """Retry every pending letter of one message name, oldest first."""
        return [self._retry(s) for s in self.store.list(message_name=message_name)]

    def retry_all(self) -> builtins.list[RetryResult]:
        """Retry every pending letter, oldest first (those stored meanwhile wait).

        A letter another retrier holds, or purged meanwhile, is skipped with a
        note; the batch goes on.
        """
        return [self._retry(stored) for stored in self.store.list()]

    def _retry(self, stored: StoredDeadLetter) -> RetryResult:
        if stored.resolved:
            return RetryResult(stored.id, "already_resolved")
        claim = getattr(self.store, "claim", None)
        if claim is not None:
            try:
                claimed = claim(stored.id, **self._claim_args())
            except DeadLetterNotFoundError:
                return RetryResult(stored.id, "skipped", note=_PURGED_BEFORE)
            if claimed is None:
                return self._unclaimed(stored.id, self.store.get(stored.id))
            stored = claimed
        loaded = self._load(stored)
        if isinstance(loaded, Exception):
            return self._failed(stored, loaded)
        message, metadata = loaded
        try:
            self._bus.redeliver(message, handler=stored.letter.handler, metadata=metadata)
        except Exception as exc:
            return self._failed(stored, exc)
        try:
            self.store.mark_resolved(stored.id, at=self._clock())
        except DeadLetterNotFoundError:
            return RetryResult(stored.id, "resolved", note=_PURGED_DURING)
        return RetryResult(stored.id, "resolved")

    def _failed(self, stored: StoredDeadLetter, error: BaseException) -> RetryResult:
        text, traceback = _error_text(error)
        try:
            self.store.mark_retry_failed(
                stored.id, error=text, traceback=traceback, at=self._clock()
            )
        except DeadLetterNotFoundError:
            return RetryResult(stored.id, "failed", text, note=_PURGED_DURING)
        return RetryResult(stored.id, "failed", text)


async def _awaited(value: _T | Awaitable[_T]) -> _T:
    if inspect.isawaitable(value):
        return await value
    return value


class AsyncDeadLetters(_Base):
    """As :class:`DeadLetters`, for an :class:`~messagebus.AsyncMessageBus`: every method
    is awaited.

    The store may be async (``messagebus.sqlalchemy.AsyncSqlAlchemyDeadLetterStore``:
    the event loop goes on while it reads or writes) or sync (its calls then block
    the loop while they last).
    """

    def __init__(
        self,
        store: ManagedDeadLetterStore | Any,
        bus: AsyncMessageBus,
        *,
        clock: Callable[[], _dt.datetime] = _utcnow,
        lease: _dt.timedelta = DEFAULT_LEASE,
    ) -> None:
        if not isinstance(bus, AsyncMessageBus):
            raise TypeError(f"AsyncDeadLetters retries with an AsyncMessageBus, not {bus!r}")
        super().__init__(store, bus, clock=clock, lease=lease)
        self._bus = bus
        self._store: Any = store  # its methods may return awaitables

    async def list(
        self,
        *,
        message_name: str | None = None,
        handler: str | None = None,
        resolved: bool | None = False,
        limit: int | None = None,
    ) -> builtins.list[StoredDeadLetter]:
        """As :meth:`DeadLetters.list`, awaited."""
        return await _awaited(
            self._store.list(
                message_name=message_name, handler=handler, resolved=resolved, limit=limit
            )
        )

    async def show(self, letter_id: int) -> StoredDeadLetter:
        """As :meth:`DeadLetters.show`, awaited."""
        stored: StoredDeadLetter | None = await _awaited(self._store.get(letter_id))
        if stored is None:
            raise DeadLetterNotFoundError(letter_id)
        return stored

    async def purge(
        self,
        ids: Iterable[int] | None = None,
        *,
        message_name: str | None = None,
        resolved: bool | None = None,
        everything: bool = False,
    ) -> int:
        """As :meth:`DeadLetters.purge`, awaited."""
        listed = self._purge_args(ids, message_name, resolved, everything)
        return await _awaited(
            self._store.purge(ids=listed, message_name=message_name, resolved=resolved)
        )

    async def retry(self, letter_id: int) -> RetryResult:
        """As :meth:`DeadLetters.retry`, awaited."""
        return await self._retry(await self.show(letter_id))

    async def retry_type(self, message_name: str) -> builtins.list[RetryResult]:
        """As :meth:`DeadLetters.retry_type`, awaited."""
        pending = await self.list(message_name=message_name)
        return [await self._retry(stored) for stored in pending]

    async def retry_all(self) -> builtins.list[RetryResult]:
        """As :meth:`DeadLetters.retry_all`, awaited."""
        return [await self._retry(stored) for stored in await self.list()]

    async def _retry(self, stored: StoredDeadLetter) -> RetryResult:
        if stored.resolved:
            return RetryResult(stored.id, "already_resolved")
        claim = getattr(self._store, "claim", None)
        if claim is not None:
            try:
                claimed = await _awaited(claim(stored.id, **self._claim_args()))
            except DeadLetterNotFoundError:
                return RetryResult(stored.id, "skipped", note=_PURGED_BEFORE)
            if claimed is None:
                return self._unclaimed(stored.id, await _awaited(self._store.get(stored.id)))
            stored = claimed
        loaded = self._load(stored)
        if isinstance(loaded, Exception):
            return await self._failed(stored, loaded)
        message, metadata = loaded
        try:
            await self._bus.redeliver(message, handler=stored.letter.handler, metadata=metadata)
        except Exception as exc:
            return await self._failed(stored, exc)
        try:
            await _awaited(self._store.mark_resolved(stored.id, at=self._clock()))
        except DeadLetterNotFoundError:
            return RetryResult(stored.id, "resolved", note=_PURGED_DURING)
        return RetryResult(stored.id, "resolved")

    async def _failed(self, stored: StoredDeadLetter, error: BaseException) -> RetryResult:
        text, traceback = _error_text(error)
        try:
            await _awaited(
                self._store.mark_retry_failed(
                    stored.id, error=text, traceback=traceback, at=self._clock()
                )
            )
        except DeadLetterNotFoundError:
            return RetryResult(stored.id, "failed", text, note=_PURGED_DURING)
        return RetryResult(stored.id, "failed", text)


# -- letters that could not be stored -----------------------------------------------


def _letter_data(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as JSON-safe data (a spool line's ``letter``)."""
    return {
        "message_name": letter.message_name,
        "message_version": letter.message_version,
        "payload": letter.payload,
        "metadata": letter.metadata,
        "handler": letter.handler,
        "error": letter.error,
        "traceback": letter.traceback,
        "attempts": letter.attempts,
        "failed_at": letter.failed_at.isoformat(),
    }


class DeadLetterSpool:
    """A local file that keeps the dead letters a store could not write.

    One JSON object a line, ``{"event": "dead_letter_store_failed", "letter":
    {...}}``, appended and flushed to disk before :meth:`append` returns. The
    letter is whole (its payload is not redacted: it is data to bring back, not
    a log line), so keep the file where the database's data may be kept.
    ``messagebus dead-letters import FILE`` (:func:`import_dead_letters`)
    brings its letters into the store; a letter already there is not added twice.

    Args:
        path: The file; made when the first letter is appended.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DeadLetterSpool({self.path!r})"

    def append(self, letter: DeadLetter) -> None:
        """Keep a letter: raises if it cannot be written to the file."""
        line = json.dumps({"event": STORE_FAILED, "letter": _letter_data(letter)})
        with self._lock, open(self.path, "a", encoding="utf-8") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())


@attrs.frozen
class ImportReport:
    """What :func:`import_dead_letters` did.

    Attributes:
        imported: Letters added to the store.
        already_stored: Letters found in the store already, not added again.
        problems: Lines that hold a letter that could not be brought back, by line number.
    """

    imported: int
    already_stored: int
    problems: tuple[str, ...] = ()


def _read_letters(
    source: str | os.PathLike[str] | Iterable[str], serializer: Serializer | None
) -> Iterator[tuple[int, DeadLetter | str]]:
    """Each letter of a spool or log (or the problem with its line), by line number.

    Lines of other events are passed over: a whole application log can be read.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8", errors="replace") as file:
            yield from _letters_in(file, serializer)
    else:
        yield from _letters_in(source, serializer)


def _letters_in(
    lines: Iterable[str], serializer: Serializer | None
) -> Iterator[tuple[int, DeadLetter | str]]:
    for number, line in enumerate(lines, start=1):
        if STORE_FAILED not in line:
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a plain text line that mentions the event: not a record
        if type(record) is not dict or record.get("event") != STORE_FAILED:
            continue
        try:
            yield number, _letter_of(record, serializer)
        except (KeyError, TypeError, ValueError) as exc:
            yield number, f"line {number}: not a dead letter that can be brought back: {exc}"


def _letter_of(record: dict[str, Any], serializer: Serializer | None) -> DeadLetter:
    data = record.get("letter")
    if isinstance(data, dict):  # a spool line: the whole letter
        return _letter(data, data["message_version"], data["traceback"], data["attempts"])
    # The bus's own log line: what it logs of the letter, the rest from the bus.
    name = record["message_name"]
    message_type: Any = None if serializer is None else serializer.names.get(name)
    if message_type is None:
        raise ValueError(f"message name {name!r} is not registered with the bus")
    payload = record["payload"]
    if holds_sensitive(message_type) and REDACTED in json.dumps(payload):
        raise ValueError(f"{name}: the log redacted its sensitive fields")
    failed_at = record.get("timestamp") or _utcnow().isoformat()
    return _letter(
        {**record, "failed_at": failed_at},
        getattr(message_type, "__message_version__", 1),
        str(record.get("exception") or ""),
        int(record.get("attempts") or 0),
    )


def _letter(data: dict[str, Any], version: Any, traceback: Any, attempts: Any) -> DeadLetter:
    failed_at = _dt.datetime.fromisoformat(str(data["failed_at"]).replace("Z", "+00:00"))
    if failed_at.tzinfo is None:
        raise ValueError(f"failed_at {data['failed_at']!r} has no UTC offset")
    fields = {
        "message_name": data["message_name"],
        "payload": data["payload"],
        "metadata": data["metadata"],
        "handler": data["handler"],
        "error": data["error"],
    }
    kinds = {"payload": dict, "metadata": dict}
    for key, value in fields.items():
        if not isinstance(value, kinds.get(key, str)):
            raise TypeError(f"{key} is a {type(value).__name__}")
    if type(version) is not int or type(attempts) is not int or not isinstance(traceback, str):
        raise TypeError("message_version and attempts must be ints, traceback a str")
    return DeadLetter(
        message_version=version,
        traceback=traceback,
        attempts=attempts,
        failed_at=failed_at.astimezone(_dt.timezone.utc),
        **fields,
    )


def import_dead_letters(
    store: ManagedDeadLetterStore,
    source: str | os.PathLike[str] | Iterable[str],
    *,
    serializer: Serializer | None = None,
) -> ImportReport:
    """Bring back into ``store`` the letters it could not write.

    Args:
        store: The store to add them to.
        source: A spool file (:class:`DeadLetterSpool`) or a log of the bus's JSON
            lines (its ``dead_letter_store_failed`` lines), or their lines.
        serializer: The bus's serializer: a log line does not carry the message's
            version, which it gives. A log line whose payload the log redacted is
            reported, not imported.

    Returns:
        How many letters were imported, found already stored, and the problems.
    """
    imported = already = 0
    problems: builtins.list[str] = []
    contains = getattr(store, "contains", None)
    for _, found in _read_letters(source, serializer):
        if isinstance(found, str):
            problems.append(found)
        elif contains is not None and contains(found):
            already += 1
        else:
            store.add(found)
            imported += 1
    return ImportReport(imported, already, tuple(problems))


async def import_dead_letters_async(
    store: Any,
    source: str | os.PathLike[str] | Iterable[str],
    *,
    serializer: Serializer | None = None,
) -> ImportReport:
    """As :func:`import_dead_letters`, into a store whose methods may be awaited."""
    imported = already = 0
    problems: builtins.list[str] = []
    contains = getattr(store, "contains", None)
    for _, found in _read_letters(source, serializer):
        if isinstance(found, str):
            problems.append(found)
        elif contains is not None and await _awaited(contains(found)):
            already += 1
        else:
            await _awaited(store.add(found))
            imported += 1
    return ImportReport(imported, already, tuple(problems))
