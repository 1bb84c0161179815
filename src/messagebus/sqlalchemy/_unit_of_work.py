"""A unit of work on a SQLAlchemy session, with optimistic checks per aggregate."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.orm import InstanceState, Session, UOWTransaction

from messagebus._wakeup import wake_relays
from messagebus.exceptions import ConfigurationError
from messagebus.transport import OutgoingMessage
from messagebus.unit_of_work import AbstractUnitOfWork, _repository

from ._inbox import claim, claim_statement, default_inbox_table
from ._outbox import check_messages, stage_statements
from ._repository import SqlAlchemyRepository

__all__ = ["SqlAlchemyUnitOfWork"]

#: Where a session made by a unit of work keeps a reference to it.
_INFO_KEY = "messagebus.unit_of_work"


def _check_repositories(uow: object, expected: type, repositories: Mapping[str, object]) -> None:
    """Refuse what is not a repository of the right kind, or a name the unit of work uses."""
    for name, repository in repositories.items():
        if not isinstance(repository, expected):
            article = "an" if expected.__name__[0] in "AEIOU" else "a"
            raise ConfigurationError(
                f"repository {name!r} must be {article} {expected.__name__}, not {repository!r}"
            )
        if name.startswith("_") or hasattr(type(uow), name) or name == "session":
            raise ConfigurationError(
                f"{name!r} cannot name a repository: {type(uow).__name__} uses that name"
            )


class SqlAlchemyUnitOfWork(AbstractUnitOfWork):
    """A unit of work over one SQLAlchemy session: one transaction per handler attempt.

    Give the bus a factory that makes one per attempt; each keyword names a
    repository, reached as an attribute (the same interface as
    :class:`messagebus.testing.FakeUnitOfWork`)::

        session_factory = sessionmaker(create_engine(url))

        def uow() -> SqlAlchemyUnitOfWork:
            return SqlAlchemyUnitOfWork(
                session_factory, products=SqlAlchemyRepository(Product, key="sku")
            )

        bus = MessageBus(registry, uow=uow)

    For mypy, a subclass may declare the repositories' types (annotations
    only, no values)::

        class UnitOfWork(SqlAlchemyUnitOfWork):
            products: SqlAlchemyRepository[Product]

    The bus commits after the handler returns, rolls back when it fails and
    always closes; used directly, the unit of work is also a context manager
    that rolls back on an exception and closes.

    **Optimistic concurrency.** Map an aggregate root with SQLAlchemy's
    ``version_id_col`` and the aggregate is version-checked *as a whole*: when
    anything in it changed in a flush (the root, or any object reachable from it
    through ``save-update`` cascades, such as its batches and their order lines),
    the root's version is incremented with the row's ``UPDATE ... WHERE
    version = <read>``. A unit of work that read the aggregate before another one
    committed a change to it then fails with SQLAlchemy's ``StaleDataError``,
    which the bus's default policy retries in a fresh unit of work. Roots mapped
    with ``version_id_generator=False`` keep the versions their application
    sets. On PostgreSQL at ``REPEATABLE READ`` or ``SERIALIZABLE`` the conflict
    may surface as a serialisation failure (SQLSTATE 40001) instead: retried too.

    **Delivered messages** are claimed in an inbox table
    (:meth:`claim_incoming`): ``messagebus_inbox`` unless ``inbox_table``
    names the application's own (:func:`~messagebus.sqlalchemy.inbox_table`).

    **Outgoing messages** are written to an outbox table
    (:meth:`stage_outgoing`) in the same transaction: ``messagebus_outbox``
    unless ``outbox_table`` names the application's own
    (:func:`~messagebus.sqlalchemy.outbox_table`).

    Args:
        session_factory: Makes the session, e.g. a ``sessionmaker``; called once.
        inbox_table: The inbox table (by default ``messagebus_inbox``).
        outbox_table: The outbox table (by default ``messagebus_outbox``).
        **repositories: Repository declarations by the attribute name they
            are reached by.

    Attributes:
        session: This unit of work's session, for queries that no repository
            offers (a read model, say).
    """

    def __init__(
        self,
        session_factory: Callable[[], Session],
        /,
        *,
        inbox_table: sqlalchemy.Table | None = None,
        outbox_table: sqlalchemy.Table | None = None,
        **repositories: SqlAlchemyRepository[Any],
    ) -> None:
        super().__init__()
        self._inbox_table = inbox_table
        self._outbox_table = outbox_table
        self._outgoing: list[OutgoingMessage] = []
        _check_repositories(self, SqlAlchemyRepository, repositories)
        session = session_factory()
        if not isinstance(session, Session):
            raise ConfigurationError(
                f"session_factory must make SQLAlchemy Sessions, not {type(session).__qualname__}"
            )
        _listen_for_flushes(type(session))
        session.info[_INFO_KEY] = weakref.ref(self)
        self.session = session
        self._repositories = {
            name: repository.bind(session, self) for name, repository in repositories.items()
        }

    def _repr_fields(self) -> list[str]:
        return [
            f"repositories={sorted(self.__dict__.get('_repositories', {}))}",
            *super()._repr_fields(),
        ]

    def __getattr__(self, name: str) -> SqlAlchemyRepository[Any]:
        return _repository(self, self.__dict__.get("_repositories", {}), name)  # type: ignore[no-any-return]

    def claim_incoming(self, message_id: str, handler: str) -> bool:
        """Record in the inbox table that ``handler`` handles the delivered message
        ``message_id``, in this unit of work's transaction.

        Returns False when the inbox has that row already: the message was
        handled by that handler (and committed) before, so it is not handled
        again. On PostgreSQL a concurrent claim of the same pair waits for the
        first transaction to end, then sees its row (or, had it rolled back,
        claims it). The row commits, or rolls back, with the handler's change.
        """
        table = self._inbox_table if self._inbox_table is not None else default_inbox_table()
        dialect = self.session.get_bind().dialect.name
        statement = claim_statement(dialect, table)
        result = self.session.execute(statement, claim(message_id, handler))
        return result.first() is not None  # the claim's row, RETURNING it: inserted

    def stage_outgoing(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send ``messages`` if, and only if, this unit of work commits.

        They are written to the outbox table at commit, in its transaction,
        after the change's own rows (whose row locks order two transactions
        that change the same aggregate: the second one's rows come after the
        first one's); a relay publishes them. Rollback discards them. On
        PostgreSQL the commit also notifies the relays that listen; in this
        process, relays are woken when the commit returns.

        Raises:
            TypeError: Something other than an :class:`~messagebus.transport.OutgoingMessage`.
        """
        check_messages(messages)
        self._outgoing.extend(messages)

    def _commit(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if outgoing:
            self.session.flush()
            dialect = self.session.get_bind().dialect.name
            for statement, parameters in stage_statements(dialect, self._outbox_table, outgoing):
                self.session.execute(statement, parameters)
        self.session.commit()
        if outgoing:
            wake_relays()

    def _rollback(self) -> None:
        self._outgoing = []
        self.session.rollback()

    def close(self) -> None:
        """Close the session: its connection goes back to the pool, any open
        transaction is rolled back."""
        self.session.info.pop(_INFO_KEY, None)
        self.session.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            self.close()


def _version_changed_aggregates(session: Session, aggregates: Iterable[object]) -> None:
    """Before a flush: increment the version of every aggregate that changed."""
    deleted = session.deleted
    for aggregate in aggregates:
        state: InstanceState[Any] | None = sqlalchemy.inspect(aggregate, raiseerr=False)
        if state is None or state.key is None or state.session is not session:
            continue  # not mapped, not yet inserted, or not in this session
        mapper = state.mapper
        version_column = mapper.version_id_col
        generate = mapper.version_id_generator
        if version_column is None or not callable(generate) or aggregate in deleted:
            continue
        if not _changed(state, mapper.cascade_iterator("save-update", state), deleted):
            continue
        key = mapper.get_property_by_column(version_column).key
        if state.attrs[key].history.added:
            continue  # set by the application for this flush already
        setattr(aggregate, key, generate(getattr(aggregate, key)))


def _changed(
    root: InstanceState[Any],
    reachable: Iterable[tuple[object, Any, InstanceState[Any], Any]],
    deleted: Any,
) -> bool:
    if root.modified:
        return True
    return any(
        state.modified or state.key is None or obj in deleted for obj, _, state, _ in reachable
    )


def _before_flush(session: Session, flush_context: UOWTransaction, instances: object) -> None:
    ref = session.info.get(_INFO_KEY)
    uow = ref() if ref is not None else None
    if uow is not None:
        _version_changed_aggregates(session, uow.seen)


# Session classes whose flushes are watched. A sessionmaker makes sessions of a
# class of its own, so this listens to the application's sessions only (or to
# every plain Session, where the factory makes those); sessions that no unit of
# work made are left alone.
_listening: weakref.WeakSet[type[Session]] = weakref.WeakSet()
_listening_lock = threading.Lock()


def _listen_for_flushes(session_class: type[Session]) -> None:
    if session_class in _listening:
        return
    with _listening_lock:
        if session_class not in _listening:  # pragma: no branch - lost only in a race
            event.listen(session_class, "before_flush", _before_flush)
            _listening.add(session_class)
