"""The unit of work and repositories on SQLAlchemy 2.x (the ``sqlalchemy`` extra).

Importing :mod:`messagebus` does not import SQLAlchemy; importing this package does::

    from messagebus.sqlalchemy import SqlAlchemyRepository, SqlAlchemyUnitOfWork

    session_factory = sessionmaker(create_engine(url))
    bus = MessageBus(
        registry,
        uow=lambda: SqlAlchemyUnitOfWork(
            session_factory, products=SqlAlchemyRepository(Product, key="sku")
        ),
    )

For :class:`~messagebus.AsyncMessageBus`, the same on an ``AsyncSession``
(aiosqlite, or psycopg 3 / asyncpg on PostgreSQL)::

    from messagebus.sqlalchemy import AsyncSqlAlchemyRepository, AsyncSqlAlchemyUnitOfWork

    session_factory = async_sessionmaker(create_async_engine(url), expire_on_commit=False)
    bus = AsyncMessageBus(
        registry,
        uow=lambda: AsyncSqlAlchemyUnitOfWork(
            session_factory,
            products=AsyncSqlAlchemyRepository(
                Product, key="sku", options=[selectinload(Product.batches)]
            ),
        ),
    )
"""

from ._async_repository import AsyncSqlAlchemyRepository
from ._async_unit_of_work import AsyncSqlAlchemyUnitOfWork
from ._dead_letters import (
    AsyncSqlAlchemyDeadLetterStore,
    SqlAlchemyDeadLetterStore,
    dead_letter_table,
)
from ._inbox import inbox_table, purge_inbox
from ._outbox import AsyncSqlAlchemyOutbox, Claim, OutboxEntry, SqlAlchemyOutbox, outbox_table
from ._repository import SqlAlchemyRepository
from ._unit_of_work import SqlAlchemyUnitOfWork

__all__ = [
    "AsyncSqlAlchemyDeadLetterStore",
    "AsyncSqlAlchemyOutbox",
    "AsyncSqlAlchemyRepository",
    "AsyncSqlAlchemyUnitOfWork",
    "Claim",
    "OutboxEntry",
    "SqlAlchemyDeadLetterStore",
    "SqlAlchemyOutbox",
    "SqlAlchemyRepository",
    "SqlAlchemyUnitOfWork",
    "dead_letter_table",
    "inbox_table",
    "outbox_table",
    "purge_inbox",
]
