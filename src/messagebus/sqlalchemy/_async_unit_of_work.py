"""A unit of work on a SQLAlchemy AsyncSession, with the same optimistic checks."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncSession

from messagebus._wakeup import wake_relays
from messagebus.exceptions import ConfigurationError
from messagebus.transport import OutgoingMessage
from messagebus.unit_of_work import AbstractAsyncUnitOfWork, _repository

from ._async_repository import AsyncSqlAlchemyRepository
from ._inbox import claim, claim_statement, default_inbox_table
from ._outbox import check_messages, stage_statements
from ._unit_of_work import _INFO_KEY, _check_repositories, _listen_for_flushes

__all__ = ["AsyncSqlAlchemyUnitOfWork"]


class AsyncSqlAlchemyUnitOfWork(AbstractAsyncUnitOfWork):
    """A unit of work over one ``AsyncSession``, for :class:`~messagebus.AsyncMessageBus`.

    The async twin of :class:`~messagebus.sqlalchemy.SqlAlchemyUnitOfWork`:
    one transaction per handler attempt, repositories reached as attributes,
    the same whole-aggregate version check (the very same code: it runs on
    the ``AsyncSession``'s inner sync session, at each flush)::

        engine = create_async_engine("sqlite+aiosqlite:///service.db")
        session_factory = async_sessionmaker(engine, expire_on_commit=False)

        def uow() -> AsyncSqlAlchemyUnitOfWork:
            return AsyncSqlAlchemyUnitOfWork(
                session_factory,
                products=AsyncSqlAlchemyRepository(
                    Product, key="sku", options=[selectinload(Product.batches)]
                ),
            )

        bus = AsyncMessageBus(registry, uow=uow)

    Handlers await what reads the database::

        async def allocate(cmd: Allocate, uow: UnitOfWork) -> str:
            product = await uow.products.get(cmd.sku)
            return product.allocate(cmd.orderid, cmd.qty)

    Make the session factory with ``expire_on_commit=False`` when you use
    aggregates after a commit (a unit of work used directly, committed twice):
    an expired attribute cannot be loaded again without an ``await``. The bus
    itself only reads the aggregates' ``events`` after commit, which is never
    expired.

    The bus commits after the handler returns, rolls back when it fails or is
    cancelled, and always closes; closing runs to its end even when the task
    is cancelled again meanwhile, so that the connection goes back to the
    pool. Used directly, the unit of work is also an async context manager
    that rolls back on an exception and closes.

    Args:
        session_factory: Makes the session, e.g. an ``async_sessionmaker``;
            called once.
        inbox_table: The inbox table of :meth:`claim_incoming` (by default
            ``messagebus_inbox``).
        outbox_table: The outbox table of :meth:`stage_outgoing` (by default
            ``messagebus_outbox``).
        **repositories: :class:`~messagebus.sqlalchemy.AsyncSqlAlchemyRepository`
            declarations by the attribute name they are reached by.

    Attributes:
        session: This unit of work's ``AsyncSession``, for queries that no
            repository offers (a read model, say).
    """

    def __init__(
        self,
        session_factory: Callable[[], AsyncSession],
        /,
        *,
        inbox_table: sqlalchemy.Table | None = None,
        outbox_table: sqlalchemy.Table | None = None,
        **repositories: AsyncSqlAlchemyRepository[Any],
    ) -> None:
        super().__init__()
        self._inbox_table = inbox_table
        self._outbox_table = outbox_table
        self._outgoing: list[OutgoingMessage] = []
        _check_repositories(self, AsyncSqlAlchemyRepository, repositories)
        session = session_factory()
        if not isinstance(session, AsyncSession):
            raise ConfigurationError(
                "session_factory must make SQLAlchemy AsyncSessions (an async_sessionmaker), "
                f"not {type(session).__qualname__}"
            )
        # The version check of the sync unit of work, on the inner sync session:
        # its flushes (awaited through the AsyncSession) run the same listener.
        sync_session = session.sync_session
        _listen_for_flushes(type(sync_session))
        sync_session.info[_INFO_KEY] = weakref.ref(self)
        self.session = session
        self._repositories = {
            name: repository.bind(session, self) for name, repository in repositories.items()
        }

    def _repr_fields(self) -> list[str]:
        return [
            f"repositories={sorted(self.__dict__.get('_repositories', {}))}",
            *super()._repr_fields(),
        ]

    def __getattr__(self, name: str) -> AsyncSqlAlchemyRepository[Any]:
        return _repository(self, self.__dict__.get("_repositories", {}), name)  # type: ignore[no-any-return]

    async def claim_incoming(self, message_id: str, handler: str) -> bool:
        """Record in the inbox table that ``handler`` handles the delivered message
        ``message_id``, in this unit of work's transaction (as
        :meth:`SqlAlchemyUnitOfWork.claim_incoming
        <messagebus.sqlalchemy.SqlAlchemyUnitOfWork.claim_incoming>` does).

        Returns False when that handler has handled the message before.
        """
        table = self._inbox_table if self._inbox_table is not None else default_inbox_table()
        dialect = self.session.get_bind().dialect.name
        statement = claim_statement(dialect, table)
        result = await self.session.execute(statement, claim(message_id, handler))
        return result.first() is not None  # the claim's row, RETURNING it: inserted

    def stage_outgoing(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send ``messages`` if, and only if, this unit of work commits: written
        to the outbox table at commit, in its transaction (as
        :meth:`SqlAlchemyUnitOfWork.stage_outgoing
        <messagebus.sqlalchemy.SqlAlchemyUnitOfWork.stage_outgoing>` does).
        Not awaited: nothing is written until the commit.
        """
        check_messages(messages)
        self._outgoing.extend(messages)

    async def _commit(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if outgoing:
            await self.session.flush()
            dialect = self.session.get_bind().dialect.name
            for statement, parameters in stage_statements(dialect, self._outbox_table, outgoing):
                await self.session.execute(statement, parameters)
        await self.session.commit()
        if outgoing:
            wake_relays()

    async def _rollback(self) -> None:
        self._outgoing = []
        await self.session.rollback()

    async def close(self) -> None:
        """Close the session: its connection goes back to the pool, any open
        transaction is rolled back. A cancellation meanwhile waits for it."""
        self.session.sync_session.info.pop(_INFO_KEY, None)
        await _to_completion(self.session.close)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            await self.close()


async def _to_completion(cleanup: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Await ``cleanup()`` to its end, even if this task is cancelled meanwhile.

    The cancellation is raised once the cleanup is done (a connection is
    never left half-returned to its pool), with the cleanup's own error, if
    any, as its context.
    """
    task = asyncio.create_task(cleanup())
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as error:
            cancelled = error
    if cancelled is None:
        return task.result()
    cancelled.__context__ = None if task.cancelled() else task.exception()
    raise cancelled
