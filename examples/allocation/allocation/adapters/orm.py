"""The tables, and the imperative mapping of the domain's classes onto them.

Nothing happens at import: :func:`start_mappers` maps (once per process) and
:func:`make_engine` (or :func:`make_async_engine`, for the async entry point)
makes an engine, when an entry point asks.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import registry, relationship, selectinload
from sqlalchemy.orm.interfaces import ORMOption

from allocation.domain import model

metadata = MetaData()

products = Table(
    "products",
    metadata,
    Column("sku", String(255), primary_key=True),
    # Checked and incremented by the unit of work whenever the aggregate changes.
    Column("version_number", Integer, nullable=False),
)

batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reference", String(255), unique=True, nullable=False),
    Column("sku", ForeignKey("products.sku"), nullable=False),
    Column("_purchased_quantity", Integer, nullable=False),
    Column("eta", Date, nullable=True),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sku", String(255), nullable=False),
    Column("qty", Integer, nullable=False),
    Column("orderid", String(255), nullable=False),
)

allocations = Table(
    "allocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("orderline_id", ForeignKey("order_lines.id"), nullable=False),
    Column("batch_id", ForeignKey("batches.id"), nullable=False),
)

#: The read model (CQRS): one row per allocated order line, kept by event handlers.
allocations_view = Table(
    "allocations_view",
    metadata,
    Column("orderid", String(255), primary_key=True),
    Column("sku", String(255), primary_key=True),
    Column("batchref", String(255), nullable=False),
)

mapper_registry = registry()
_lock = threading.Lock()


def start_mappers() -> None:
    """Map the domain's classes onto the tables; a call while they are mapped does nothing.

    After SQLAlchemy's ``clear_mappers()`` (which the book's test fixtures call
    after each test) it maps them again.
    """
    with _lock:
        if sa_inspect(model.Product, raiseerr=False) is not None:
            return
        lines_mapper = mapper_registry.map_imperatively(model.OrderLine, order_lines)
        batches_mapper = mapper_registry.map_imperatively(
            model.Batch,
            batches,
            properties={
                "_allocations": relationship(
                    lines_mapper, secondary=allocations, collection_class=set
                ),
            },
        )
        mapper_registry.map_imperatively(
            model.Product,
            products,
            properties={
                "batches": relationship(
                    batches_mapper, order_by=batches.c.id, cascade="all, delete-orphan"
                ),
            },
            version_id_col=products.c.version_number,
        )
        # A product loaded from the database was not made by __init__.
        if not event.contains(model.Product, "load", _give_events_list):
            event.listen(model.Product, "load", _give_events_list)


def _give_events_list(product: model.Product, _: Any) -> None:
    product.events = []


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the service; on PostgreSQL at REPEATABLE READ, as in the book."""
    if url.startswith("postgresql"):
        kwargs.setdefault("isolation_level", "REPEATABLE READ")
    return create_engine(url, **kwargs)


def create_schema(engine: Engine) -> None:
    """Create the tables that do not exist yet (a real service would migrate)."""
    metadata.create_all(engine)


def whole_product() -> list[ORMOption]:
    """Loader options that load a Product with all its methods touch: its batches
    and their allocated lines (an async session cannot load them lazily)."""
    # The mapped attributes, as the mappers know them (the domain classes are
    # plain: their attributes are instrumented by start_mappers()).
    batches = sa_inspect(model.Product).relationships["batches"].class_attribute
    allocations = sa_inspect(model.Batch).relationships["_allocations"].class_attribute
    return [selectinload(batches).selectinload(allocations)]


#: The async driver of each database: aiosqlite embedded, psycopg 3 on PostgreSQL.
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


def make_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """:func:`make_engine` for the async entry point: the same URL (``sqlite:///...``,
    ``postgresql+psycopg://...``) on the database's async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ASYNC_DRIVERS and not parsed.get_dialect().is_async:
        parsed = parsed.set(drivername=ASYNC_DRIVERS[backend])
    if backend == "postgresql":
        kwargs.setdefault("isolation_level", "REPEATABLE READ")
    return create_async_engine(parsed, **kwargs)


async def create_schema_async(engine: AsyncEngine) -> None:
    """:func:`create_schema` on an async engine."""
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
