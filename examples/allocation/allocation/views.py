"""The read side (CQRS): allocations per order, a table kept by event handlers.

Reads never touch the domain model: ``GET /allocations/<orderid>`` is one
query on a denormalised table that the handlers of Allocated and Deallocated
keep up to date. The read model is a dependency of its own (it could live in
Redis, as in the book), so its handlers need no unit of work.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine, delete, insert, select

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


class SqlAlchemyAllocationsView:
    """The read model in the service's database (the ``allocations_view`` table)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, orderid: str, sku: str, batchref: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                insert(orm.allocations_view).values(orderid=orderid, sku=sku, batchref=batchref)
            )

    def remove(self, orderid: str, sku: str) -> None:
        table = orm.allocations_view
        with self._engine.begin() as connection:
            connection.execute(delete(table).where(table.c.orderid == orderid, table.c.sku == sku))

    def for_order(self, orderid: str) -> list[dict[str, str]]:
        table = orm.allocations_view
        query = (
            select(table.c.sku, table.c.batchref)
            .where(table.c.orderid == orderid)
            .order_by(table.c.sku)
        )
        with self._engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]


def allocations(orderid: str, view: AllocationsView) -> list[dict[str, str]]:
    """The allocations of an order, as the web API returns them."""
    return view.for_order(orderid)
