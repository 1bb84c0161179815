"""S8: the allocation example (``examples/allocation``) on SQLite in memory, both sides.

The messagebus side is the example's own service layer, wired by its
``bootstrap`` (``bootstrap_async`` for the async bus): its handlers, its
``SqlAlchemyUnitOfWork`` and repository, its read model. The hand-written
side does the same transactions with a SQLAlchemy ``Session`` and no bus at
all: the same mapped classes and tables, the same queries, the same version
increment, the same commit, then the same read-model update. Both sides run
in this project's environment; everything here is shared by both, so that
they differ only by the bus.

- **The database**: SQLite in memory, one connection shared by every session
  (``StaticPool``), the example's tables and mapping, and :data:`PRODUCTS`
  products inserted once, each with two batches: one in the warehouse and a
  shipment arriving later (the example's choice between them).
- **An operation** allocates a new order line of :data:`QTY` to a product:
  it is loaded with its batches and their allocated lines (lazily by the sync
  session, by the repository's ``selectinload`` options on the async one),
  the warehouse batch takes the line, which is inserted and allocated, the
  product's version is incremented (``UPDATE ... WHERE version_number = ...``),
  and the transaction commits; then ``Allocated`` is handled: published and
  added to the read model (``allocations_view``, in a transaction of its own).
- **Constant work**: each operation takes the next product, so that every one
  finds a product with no allocated line. When all have one, the lines,
  allocations and read model are deleted (a few ``DELETE`` statements, once
  per :data:`PRODUCTS` operations, timed on both sides alike).
- **Checks**: before timing, one operation of each side, each on a database
  of its own, must run the very same SQL statements with the same parameters
  and the same commits (recorded from the engine's events), return the
  warehouse batch and fill the read model. While timing, the publisher counts
  its calls (:data:`TALLY`): every operation must have published its
  ``Allocated`` event, so an allocation that failed, or an event that was not
  handled, fails the run instead of looking fast.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

from bench._api import Case, Tally, expect
from bench.impls.messagebus import configure_logs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "allocation"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))  # the example's package: import allocation

from allocation import bootstrap as wiring  # noqa: E402
from allocation.adapters import orm  # noqa: E402
from allocation.domain import commands, events, model  # noqa: E402
from allocation.service_layer.handlers import InvalidSku  # noqa: E402
from allocation.views import AsyncSqlAlchemyAllocationsView, SqlAlchemyAllocationsView  # noqa: E402

#: Products in the database; an operation allocates to each in turn.
PRODUCTS = 2_000
#: The quantity of every order line, and of every batch.
QTY, BATCH_QTY = 1, 100
SKUS = [f"SKU-{i:05d}" for i in range(PRODUCTS)]
SHIPMENT_ETA = datetime.date(2030, 1, 1)

#: An operation takes milliseconds: a repeat lasts at least this long (a full run's target).
MIN_TARGET_S = 0.02

#: Operations run on the timed database before timing: SQLAlchemy compiles each
#: statement once per engine, and the calibration of a repeat's length must not
#: time that (it made repeats of 2 operations instead of 10).
WARM_UP = 20

#: Counts the publisher's calls: one ``Allocated`` per operation.
TALLY = Tally()

Line = tuple[str, str, int]


def warehouse(sku: str) -> str:
    return f"{sku}-warehouse"


def publish(channel: str, event: Any) -> None:
    """The publisher of both sides (a broker client in production): counts the events."""
    TALLY.hit()


class Notifications:
    """Out of stock never happens here: every batch has room for every line."""

    def send(self, destination: str, message: str) -> None:
        raise RuntimeError(f"unexpected notification to {destination}: {message}")


NOTIFICATIONS = Notifications()


# -- the database -----------------------------------------------------------------


def _seed(connection: Any) -> None:
    connection.execute(insert(orm.products), [{"sku": sku, "version_number": 1} for sku in SKUS])
    connection.execute(
        insert(orm.batches),
        [
            {"reference": ref, "sku": sku, "_purchased_quantity": BATCH_QTY, "eta": eta}
            for sku in SKUS
            for ref, eta in ((warehouse(sku), None), (f"{sku}-shipment", SHIPMENT_ETA))
        ],
    )


#: What is deleted when every product has an allocated line.
_RESET = (delete(orm.allocations), delete(orm.order_lines), delete(orm.allocations_view))


def _reset(connection: Any) -> None:
    for statement in _RESET:
        connection.execute(statement)


def make_engine() -> Engine:
    """A new SQLite database in memory, with the example's tables and the products."""
    orm.start_mappers()
    engine = create_engine("sqlite://", poolclass=StaticPool)
    orm.create_schema(engine)
    with engine.begin() as connection:
        _seed(connection)
    return engine


async def make_async_engine() -> AsyncEngine:
    """:func:`make_engine` on aiosqlite."""
    orm.start_mappers()
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    await orm.create_schema_async(engine)
    async with engine.begin() as connection:
        await connection.run_sync(_seed)
    return engine


def line_source(engine: Engine) -> Callable[[], Line]:
    """The order line of each operation: a new order, on the next product."""
    count = itertools.count()

    def next_line() -> Line:
        n = next(count)
        index = n % PRODUCTS
        if index == 0 and n:
            with engine.begin() as connection:
                _reset(connection)
        return f"order-{n}", SKUS[index], QTY

    return next_line


def async_line_source(engine: AsyncEngine) -> Callable[[], Awaitable[Line]]:
    """:func:`line_source` for the async sides (the reset is awaited)."""
    count = itertools.count()

    async def next_line() -> Line:
        n = next(count)
        index = n % PRODUCTS
        if index == 0 and n:
            async with engine.begin() as connection:
                await connection.run_sync(_reset)
        return f"order-{n}", SKUS[index], QTY

    return next_line


# -- the two sides, sync ----------------------------------------------------------


def bus_side(engine: Engine) -> Any:
    """The example's service as its entry points build it; its bus takes ``Allocate``."""
    return wiring.bootstrap(engine, notifications=NOTIFICATIONS, publish=publish).bus


def hand_written(engine: Engine) -> Callable[[str, str, int], str | None]:
    """The same service written by hand with SQLAlchemy: no bus, no unit of work."""
    orm.start_mappers()
    session_factory = sessionmaker(engine)
    views = SqlAlchemyAllocationsView(engine)

    def allocate(orderid: str, sku: str, qty: int) -> str | None:
        line = model.OrderLine(orderid, sku, qty)
        with session_factory() as session:
            product = session.get(model.Product, sku)
            if product is None:
                raise InvalidSku(sku)
            batchref = product.allocate(line)
            if any(isinstance(e, events.Allocated) for e in product.events):
                # The optimistic check: a changed product gets a new version.
                product.version_number += 1  # type: ignore[attr-defined]
            session.commit()
        raised, product.events = product.events, []
        for raised_event in raised:
            if isinstance(raised_event, events.Allocated):
                publish("line_allocated", raised_event)
                views.add(raised_event.orderid, raised_event.sku, raised_event.batchref)
            elif isinstance(raised_event, events.OutOfStock):
                NOTIFICATIONS.send("stock@made.com", f"Out of stock for {raised_event.sku}")
        return batchref

    return allocate


# -- the two sides, async ---------------------------------------------------------


def async_bus_side(engine: AsyncEngine) -> Any:
    """The example's async service (``bootstrap_async``); its bus takes ``Allocate``."""
    return wiring.bootstrap_async(engine, notifications=NOTIFICATIONS, publish=publish).bus


def async_hand_written(engine: AsyncEngine) -> Callable[[str, str, int], Awaitable[str | None]]:
    """The same as the async service, by hand with an ``AsyncSession``.

    As the example's async handlers do, the product is loaded whole (its
    batches and their lines, ``orm.whole_product()``), and the blocking
    publisher runs in a thread.
    """
    orm.start_mappers()
    session_factory = async_sessionmaker(engine, expire_on_commit=False)
    views = AsyncSqlAlchemyAllocationsView(engine)
    whole = orm.whole_product()

    async def allocate(orderid: str, sku: str, qty: int) -> str | None:
        line = model.OrderLine(orderid, sku, qty)
        async with session_factory() as session:
            product = await session.get(model.Product, sku, options=whole)
            if product is None:
                raise InvalidSku(sku)
            batchref = product.allocate(line)
            if any(isinstance(e, events.Allocated) for e in product.events):
                product.version_number += 1  # type: ignore[attr-defined]
            await session.commit()
        raised, product.events = product.events, []
        for raised_event in raised:
            if isinstance(raised_event, events.Allocated):
                await asyncio.to_thread(publish, "line_allocated", raised_event)
                await views.add(raised_event.orderid, raised_event.sku, raised_event.batchref)
            elif isinstance(raised_event, events.OutOfStock):
                await asyncio.to_thread(
                    NOTIFICATIONS.send, "stock@made.com", f"Out of stock for {raised_event.sku}"
                )
        return batchref

    return allocate


# -- the checks -------------------------------------------------------------------


def _record(engine: Engine) -> list[Any]:
    """What the engine runs from now on: statements with their parameters, commits, rollbacks."""
    recorded: list[Any] = []

    def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        recorded.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", lambda conn: recorded.append("COMMIT"))
    event.listen(engine, "rollback", lambda conn: recorded.append("ROLLBACK"))
    return recorded


def _expect_done(side: str, result: Any, published: int, views: Any, sql: list[Any]) -> None:
    sku = SKUS[0]
    expect(result, warehouse(sku), f"{side}: the batch of the first line")
    expect(published, 1, f"{side}: Allocated events published")
    expect(views, [{"sku": sku, "batchref": warehouse(sku)}], f"{side}: the read model")
    statements = [s[0].split()[0] for s in sql if isinstance(s, tuple)]
    expect(statements.count("INSERT"), 3, f"{side}: INSERTs (line, allocation, read model)")
    expect(statements.count("UPDATE"), 1, f"{side}: UPDATEs (the product's version)")


def _handler_of(bus: Any) -> Callable[..., Any]:
    """The bus's side as a function of the line, as the hand-written side is."""
    return lambda orderid, sku, qty: bus.handle(commands.Allocate(orderid, sku, qty))


def check_same_sql() -> None:
    """One operation of each sync side, each on a database of its own: the same SQL."""
    recorded = []
    for side in ("messagebus", "hand-written"):
        engine = make_engine()
        try:
            if side == "messagebus":
                operation: Any = _handler_of(bus_side(engine))
            else:
                operation = hand_written(engine)
            sql = _record(engine)
            before = TALLY.read()
            result = operation("order-0", SKUS[0], QTY)
            published = TALLY.read() - before - 1
            done = list(sql)
            views = SqlAlchemyAllocationsView(engine).for_order("order-0")
            _expect_done(side, result, published, views, done)
            recorded.append(done)
        finally:
            engine.dispose()
    expect(recorded[0], recorded[1], "the SQL of one operation, messagebus and by hand")


def check_same_sql_async(loop: asyncio.AbstractEventLoop) -> None:
    """:func:`check_same_sql` for the async sides."""

    async def run(side: str) -> list[Any]:
        engine = await make_async_engine()
        try:
            if side == "messagebus":
                operation: Any = _handler_of(async_bus_side(engine))
            else:
                operation = async_hand_written(engine)
            sql = _record(engine.sync_engine)
            before = TALLY.read()
            result = await operation("order-0", SKUS[0], QTY)
            published = TALLY.read() - before - 1
            done = list(sql)
            views = await AsyncSqlAlchemyAllocationsView(engine).for_order("order-0")
            _expect_done(side, result, published, views, done)
            return done
        finally:
            await engine.dispose()

    ours = loop.run_until_complete(run("messagebus"))
    theirs = loop.run_until_complete(run("hand-written"))
    expect(ours, theirs, "the SQL of one operation, messagebus and by hand (async)")


# -- the cases ----------------------------------------------------------------------

_PRODUCTS = f"{PRODUCTS:,} products of 2 batches"
#: How each side is set up, shown beside its result.
NOTES = {
    ("sync", "messagebus"): (
        f"the example's bootstrap (SqlAlchemyUnitOfWork), SQLite in memory, {_PRODUCTS}"
    ),
    ("sync", "hand-written"): "the same transactions with a SQLAlchemy Session, no bus",
    ("async", "messagebus"): (
        "the example's bootstrap_async (AsyncSqlAlchemyUnitOfWork), "
        f"aiosqlite in memory, {_PRODUCTS}"
    ),
    ("async", "hand-written"): "the same transactions with an AsyncSession, no bus",
}


def case(side: str) -> Case:
    """S8, sync: ``bus.handle(Allocate(...))``, or the hand-written ``allocate(...)``."""
    configure_logs(None)  # nothing logged, as in S1-S4 (the checks run the bus on both sides)
    engine = make_engine()
    next_line = line_source(engine)
    namespace: dict[str, Any] = {"next_line": next_line}
    if side == "messagebus":
        stmt = "bus.handle(Allocate(*next_line()))"
        bus = bus_side(engine)
        namespace.update(bus=bus, Allocate=commands.Allocate)
        operation = _handler_of(bus)
    else:
        stmt = "allocate(*next_line())"
        operation = hand_written(engine)
        namespace.update(allocate=operation)

    def check() -> None:
        check_same_sql()
        for _ in range(WARM_UP):
            operation(*next_line())

    return Case(
        stmt,
        namespace,
        tally=TALLY,
        calls_per_op=1,
        check=check,
        min_target=MIN_TARGET_S,
        note=NOTES["sync", side],
        teardown=engine.dispose,
    )


def async_case(side: str) -> Case:
    """S8, async: ``await bus.handle(Allocate(...))``, or ``await allocate(...)`` by hand.

    The process is pinned to one CPU first. aiosqlite hands every statement to
    the connection's own thread, and the publisher runs in another; when those
    threads wake each other across CPUs, the same work costs up to twice the
    CPU time, in some processes and not others (measured here: 4 or 7.6 ms an
    operation, for either side). On one CPU it is 4 ms in every process.
    """
    configure_logs(None)
    if hasattr(os, "sched_setaffinity"):
        # Threads started from now on inherit the affinity of this one.
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    loop = asyncio.new_event_loop()
    engine = loop.run_until_complete(make_async_engine())
    next_line = async_line_source(engine)
    namespace: dict[str, Any] = {"next_line": next_line}
    if side == "messagebus":
        stmt = "await bus.handle(Allocate(*await next_line()))"
        bus = async_bus_side(engine)
        namespace.update(bus=bus, Allocate=commands.Allocate)
        operation = _handler_of(bus)
    else:
        stmt = "await allocate(*await next_line())"
        operation = async_hand_written(engine)
        namespace.update(allocate=operation)

    async def warm_up() -> None:
        for _ in range(WARM_UP):
            await operation(*await next_line())

    def check() -> None:
        check_same_sql_async(loop)
        loop.run_until_complete(warm_up())

    def teardown() -> None:
        loop.run_until_complete(engine.dispose())
        loop.close()

    return Case(
        stmt,
        namespace,
        kind="async",
        loop=loop,
        tally=TALLY,
        calls_per_op=1,
        check=check,
        min_target=MIN_TARGET_S,
        note=NOTES["async", side],
        teardown=teardown,
    )
