"""The read side (CQRS): allocations per order, a table kept by event handlers.

Reads never touch the domain model: ``GET /allocations/<orderid>`` is one
query on a denormalised table that the handlers of Allocated and Deallocated
keep up to date. The read model is a dependency of its own (it could live in
Redis, as in the book), so its handlers need no unit of work.

The async entry point keeps the same table through an async engine
(:class:`AsyncSqlAlchemyAllocationsView`): the same statements, awaited.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Delete, Engine, Insert, Select, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from allocation.adapters import orm


class AllocationsView(Protocol):
    """Where the read model is kept."""

    def add(self, orderid: str, sku: str, batchref: str) -> None:
        """Record that an order line was allocated to a batch."""

    def remove(self, orderid: str, sku: str) -> None:
        """Forget the allocation of an order line."""

    def for_order(self, orderid: str) -> list[dict[str, str]]:
        """The allocations of an order: ``[{"sku": ..., "batchref": ...}]``."""
        ...


class AsyncAllocationsView(Protocol):
    """Where the read model is kept, for the async entry point."""

    async def add(self, orderid: str, sku: str, batchref: str) -> None:
        """Record that an order line was allocated to a batch."""

    async def remove(self, orderid: str, sku: str) -> None:
        """Forget the allocation of an order line."""

    async def for_order(self, orderid: str) -> list[dict[str, str]]:
        """The allocations of an order: ``[{"sku": ..., "batchref": ...}]``."""
        ...


def _insert(orderid: str, sku: str, batchref: str) -> Insert:
    return insert(orm.allocations_view).values(orderid=orderid, sku=sku, batchref=batchref)


def _delete(orderid: str, sku: str) -> Delete:
    table = orm.allocations_view
    return delete(table).where(table.c.orderid == orderid, table.c.sku == sku)


def _for_order(orderid: str) -> Select[tuple[str, str]]:
    table = orm.allocations_view
    return (
        select(table.c.sku, table.c.batchref)
        .where(table.c.orderid == orderid)
        .order_by(table.c.sku)
    )


class SqlAlchemyAllocationsView:
    """The read model in the service's database (the ``allocations_view`` table)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, orderid: str, sku: str, batchref: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(_insert(orderid, sku, batchref))

    def remove(self, orderid: str, sku: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(_delete(orderid, sku))

    def for_order(self, orderid: str) -> list[dict[str, str]]:
        with self._engine.connect() as connection:
            return [dict(row) for row in connection.execute(_for_order(orderid)).mappings()]


class AsyncSqlAlchemyAllocationsView:
    """The same table, through an async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, orderid: str, sku: str, batchref: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(_insert(orderid, sku, batchref))

    async def remove(self, orderid: str, sku: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(_delete(orderid, sku))

    async def for_order(self, orderid: str) -> list[dict[str, str]]:
        async with self._engine.connect() as connection:
            result = await connection.execute(_for_order(orderid))
            return [dict(row) for row in result.mappings()]


def allocations(orderid: str, view: AllocationsView) -> list[dict[str, str]]:
    """The allocations of an order, as the web API returns them."""
    return view.for_order(orderid)
