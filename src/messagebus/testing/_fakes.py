"""An in-memory unit of work that behaves like a transactional database."""

from __future__ import annotations

import builtins
import copy
import threading
import typing
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from messagebus.exceptions import ConcurrencyError, ConfigurationError
from messagebus.transport import OutgoingMessage
from messagebus.unit_of_work import (
    AbstractAsyncUnitOfWork,
    AbstractUnitOfWork,
    _repository,
    _Tracking,
)

A = TypeVar("A")


def _stored_copy(aggregate: A) -> A:
    """A copy for the store: events pending on the working copy are not data."""
    stored = copy.deepcopy(aggregate)
    events = getattr(stored, "events", None)
    if isinstance(events, list):
        events.clear()
    return stored


class InMemoryRepository(Generic[A]):
    """A table of aggregates kept in memory, shared by fake units of work.

    Used directly, it is the test's view of the "database": :meth:`add` puts
    an aggregate in at once, :meth:`get` and :meth:`list` read what was
    committed. Handlers see it through a :class:`FakeUnitOfWork`, which gives
    each attempt its own copies and writes them back only on commit.

    Args:
        key: Gives the key of an aggregate (e.g. ``lambda p: p.sku``).
        items: Aggregates to start with.
        view: The class of what units of work see: a subclass of
            :class:`RepositoryView` adds an application's own queries, as its
            SQLAlchemy repository does (``get_by_batchref`` and the like)::

                class Products(RepositoryView[Product]):
                    def get_by_batchref(self, ref: str) -> Product | None:
                        return next((p for p in self.list() if ref in p.refs), None)

                InMemoryRepository(key=lambda p: p.sku, view=Products)
    """

    def __init__(
        self,
        key: Callable[[A], Hashable],
        items: Iterable[A] = (),
        *,
        view: type[RepositoryView[A]] | None = None,
    ) -> None:
        self._key = key
        self._view = view if view is not None else RepositoryView
        self._rows: dict[Hashable, tuple[int, A]] = {}
        self._lock = threading.RLock()
        for item in items:
            self.add(item)

    def key_of(self, aggregate: A) -> Hashable:
        """The key of an aggregate."""
        return self._key(aggregate)

    def add(self, aggregate: A) -> None:
        """Store an aggregate now, outside any unit of work."""
        with self._lock:
            key = self._key(aggregate)
            version = self._rows[key][0] + 1 if key in self._rows else 1
            self._rows[key] = (version, _stored_copy(aggregate))

    def get(self, key: Hashable) -> A | None:
        """A copy of the committed aggregate with this key, or None."""
        with self._lock:
            row = self._rows.get(key)
        return None if row is None else copy.deepcopy(row[1])

    def list(self) -> list[A]:
        """Copies of every committed aggregate."""
        with self._lock:
            rows = list(self._rows.values())
        return [copy.deepcopy(aggregate) for _, aggregate in rows]

    def keys(self) -> builtins.list[Hashable]:
        """The keys of every committed aggregate."""
        with self._lock:
            return list(self._rows)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def __repr__(self) -> str:
        return f"<InMemoryRepository aggregates={len(self)} view={self._view.__qualname__}>"

    # -- used by RepositoryView -------------------------------------------------

    def _read(self, key: Hashable) -> tuple[int, A] | None:
        with self._lock:
            row = self._rows.get(key)
        return None if row is None else (row[0], copy.deepcopy(row[1]))


class RepositoryView(Generic[A]):
    """What one unit of work sees of an :class:`InMemoryRepository`.

    Aggregates read through it are private copies, tracked by the unit of
    work; its changes reach the repository on commit, and a commit fails with
    :class:`~messagebus.ConcurrencyError` if another unit of work committed the
    same aggregate since it was read (an optimistic version check).
    """

    def __init__(self, repository: InMemoryRepository[A], uow: _Tracking) -> None:
        self._repository = repository
        self._uow = uow
        self._working: dict[Hashable, tuple[int, A]] = {}  # key -> (version read, copy)

    def add(self, aggregate: A) -> None:
        """Add a new aggregate, stored on commit."""
        self._working[self._repository.key_of(aggregate)] = (0, self._uow.track(aggregate))

    def get(self, key: Hashable) -> A | None:
        """The aggregate with this key, or None."""
        if key in self._working:
            return self._working[key][1]
        row = self._repository._read(key)
        if row is None:
            return None
        self._working[key] = (row[0], self._uow.track(row[1]))
        return row[1]

    def list(self) -> list[A]:
        """Every aggregate, as this unit of work sees it."""
        keys = dict.fromkeys([*self._repository.keys(), *self._working])
        found = (self.get(key) for key in keys)
        return [aggregate for aggregate in found if aggregate is not None]

    def _check(self) -> None:
        rows = self._repository._rows
        for key, (version, _) in self._working.items():
            current = rows[key][0] if key in rows else 0
            if current != version:
                raise ConcurrencyError(f"aggregate {key!r}")

    def _write(self) -> None:
        rows = self._repository._rows
        for key, (version, aggregate) in self._working.items():
            rows[key] = (version + 1, _stored_copy(aggregate))
        self._working = {key: (version + 1, agg) for key, (version, agg) in self._working.items()}


def _commit_views(views: Iterable[RepositoryView[Any]]) -> None:
    """Write every view back, all or nothing, holding every repository's lock."""
    views = list(views)
    repositories = sorted({id(view._repository): view._repository for view in views}.items())
    locks = [repository._lock for _, repository in repositories]
    for lock in locks:
        lock.acquire()
    try:
        for view in views:
            view._check()
        for view in views:
            view._write()
    finally:
        for lock in reversed(locks):
            lock.release()


class InMemoryInbox:
    """The delivered messages each handler has handled, shared by fake units of work.

    The in-memory twin of the inbox table: give the same one to every unit
    of work (``FakeUnitOfWork(inbox=inbox, ...)``); their
    ``claim_incoming(message_id, handler)`` claims are kept on commit.

    Attributes:
        claims: How many claims were made (granted or refused).
    """

    def __init__(self) -> None:
        self._handled: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.claims = 0

    def __contains__(self, item: object) -> bool:
        """Whether ``(message_id, handler)`` was handled (committed)."""
        with self._lock:
            return item in self._handled

    def __len__(self) -> int:
        with self._lock:
            return len(self._handled)


class _FakeRepositories:
    """Repositories reached as attributes, one view per unit of work."""

    _views: dict[str, RepositoryView[Any]]

    def __init__(
        self, *, inbox: InMemoryInbox | None = None, **repositories: InMemoryRepository[Any]
    ) -> None:
        super().__init__()
        tracker = typing.cast(_Tracking, self)
        self._views = {name: repo._view(repo, tracker) for name, repo in repositories.items()}
        self._inbox = inbox
        self._claims: list[tuple[str, str]] = []
        self._staged: list[OutgoingMessage] = []
        self.outgoing: list[OutgoingMessage] = []
        self.committed = 0
        self.rolled_back = 0
        self.closed = False

    def _claim(self, message_id: str, handler: str) -> bool:
        inbox = self._inbox
        if inbox is None:
            raise ConfigurationError(
                "this fake unit of work has no inbox to claim delivered messages in: "
                "give every one the same FakeUnitOfWork(inbox=InMemoryInbox(), ...)"
            )
        claim = (message_id, handler)
        with inbox._lock:
            inbox.claims += 1
            if claim in inbox._handled or claim in self._claims:
                return False
        self._claims.append(claim)
        return True

    def _commit_now(self) -> None:
        inbox = self._inbox
        if inbox is None or not self._claims:
            _commit_views(self._views.values())
        else:
            with inbox._lock:
                # A concurrent unit of work claimed and committed the same message
                # first: this one fails, as the database's unique key would make it.
                taken = [claim for claim in self._claims if claim in inbox._handled]
                if taken:
                    raise ConcurrencyError(f"message {taken[0][0]!r} handled by {taken[0][1]!r}")
                _commit_views(self._views.values())
                inbox._handled.update(self._claims)
            self._claims = []
        self.outgoing.extend(self._staged)
        self._staged = []
        self.committed += 1

    def stage_outgoing(self, messages: Sequence[OutgoingMessage]) -> None:
        """Keep ``messages`` to send: added to :attr:`outgoing` if this unit of
        work commits, discarded if it rolls back (the outbox of the fakes)."""
        for message in messages:
            if not isinstance(message, OutgoingMessage):
                raise TypeError(
                    f"stage_outgoing takes OutgoingMessage values, not {type(message).__qualname__}"
                )
        self._staged.extend(messages)

    def _discard(self) -> None:
        for view in self._views.values():
            view._working.clear()
        self._claims = []
        self._staged = []
        self.rolled_back += 1

    def __getattr__(self, name: str) -> Any:
        return self._present(_repository(self, self.__dict__.get("_views", {}), name))

    def _repr_fields(self) -> list[str]:
        seen = typing.cast(_Tracking, super())._repr_fields()
        return [
            f"repositories={sorted(self._views)}",
            *seen,
            f"committed={self.committed}",
            f"rolled_back={self.rolled_back}",
            f"closed={self.closed}",
        ]

    def _present(self, view: RepositoryView[Any]) -> Any:
        return view


class AsyncRepositoryView(Generic[A]):
    """What an async unit of work sees of an :class:`InMemoryRepository`.

    The same as :class:`RepositoryView`, awaited like
    ``AsyncSqlAlchemyRepository``: ``add`` is plain, ``get``, ``list`` and the
    application's own queries (of a ``view=`` subclass) are awaited.
    """

    def __init__(self, view: RepositoryView[A]) -> None:
        self._view = view

    def add(self, aggregate: A) -> None:
        """Add a new aggregate, stored on commit."""
        self._view.add(aggregate)

    async def get(self, key: Hashable) -> A | None:
        """The aggregate with this key, or None."""
        return self._view.get(key)

    async def list(self) -> builtins.list[A]:
        """Every aggregate, as this unit of work sees it."""
        return self._view.list()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._view, name)
        if name.startswith("_") or not callable(method):
            return method

        async def awaitable(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return awaitable


class FakeUnitOfWork(_FakeRepositories, AbstractUnitOfWork):
    """A unit of work over in-memory repositories, for tests.

    Each keyword names a repository, which handlers reach as an attribute::

        uow = FakeUnitOfWork(products=InMemoryRepository(key=lambda p: p.sku))
        uow.products.get("LAMP")

    It behaves like a transaction: changes reach the repositories on commit,
    all or nothing, and rollback discards them with their events.

    ``inbox=`` an :class:`InMemoryInbox` shared by the units of work keeps
    the delivered messages claimed with :meth:`claim_incoming`, as the inbox
    table of ``SqlAlchemyUnitOfWork`` does.

    Messages given to :meth:`stage_outgoing` (to leave the process) are kept
    in its ``outgoing`` list when it commits, as ``SqlAlchemyUnitOfWork``
    writes them to its outbox table.

    Attributes:
        committed: How many times it committed.
        rolled_back: How many times it rolled back.
        closed: Whether it was closed.
        outgoing: The messages staged by the attempts it committed, in order.
    """

    def claim_incoming(self, message_id: str, handler: str) -> bool:
        """Claim a delivered message for a handler in the shared inbox, kept on
        commit; False when that handler has handled it (committed) before."""
        return self._claim(message_id, handler)

    def _commit(self) -> None:
        self._commit_now()

    def _rollback(self) -> None:
        self._discard()

    def close(self) -> None:
        self.closed = True


class FakeAsyncUnitOfWork(_FakeRepositories, AbstractAsyncUnitOfWork):
    """:class:`FakeUnitOfWork` for the async bus: the same, awaited.

    Its methods are coroutines, and so are its repositories' ``get``, ``list``
    and own queries (see :class:`AsyncRepositoryView`), as with
    ``AsyncSqlAlchemyUnitOfWork``.
    """

    def _present(self, view: RepositoryView[Any]) -> Any:
        return AsyncRepositoryView(view)

    async def claim_incoming(self, message_id: str, handler: str) -> bool:
        """Claim a delivered message for a handler in the shared inbox, kept on
        commit; False when that handler has handled it (committed) before."""
        return self._claim(message_id, handler)

    async def _commit(self) -> None:
        self._commit_now()

    async def _rollback(self) -> None:
        self._discard()

    async def close(self) -> None:
        self.closed = True
