"""Cancelling AsyncMessageBus.handle() over a real AsyncSession (aiosqlite, PostgreSQL):
the attempt is rolled back, nothing it raised is dispatched, the cancellation
reaches the caller, and the connection goes back to the pool.

The tests are coroutines, run by anyio's pytest plugin on asyncio.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import attrs
import pytest
import sqlalchemy
import structlog
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, reconstructor
from structlog.typing import EventDict

from messagebus import AsyncMessageBus, Command, Event, Registry
from messagebus.sqlalchemy import AsyncSqlAlchemyRepository, AsyncSqlAlchemyUnitOfWork

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[EventDict]]:
    with structlog.testing.capture_logs() as entries:
        yield entries


class Base(DeclarativeBase):
    pass


@attrs.frozen
class Reserved(Event):
    sku: str


@attrs.frozen
class Reserve(Command[str]):
    sku: str
    wait: str = "forever"  # or "database": in a statement the server takes long to run


class Stock(Base):
    __tablename__ = "cancel_stock"

    sku: Mapped[str] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.events: list[Event] = [Reserved(sku)]

    @reconstructor
    def _loaded(self) -> None:
        self.events = []


class UnitOfWork(AsyncSqlAlchemyUnitOfWork):
    stock: AsyncSqlAlchemyRepository[Stock]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def pool_events(engine: AsyncEngine) -> list[str]:
    """What the pool saw: a connection reset (rolled back), checked in, invalidated."""
    events: list[str] = []
    for name in ("reset", "checkin", "invalidate"):
        record = functools.partial(lambda name, *_: events.append(name), name)
        sqlalchemy.event.listen(engine.sync_engine.pool, name, record)
    return events


@attrs.define
class Service:
    bus: AsyncMessageBus
    session_factory: async_sessionmaker[AsyncSession]
    started: asyncio.Event
    handled: list[Reserved]
    uows: list[UnitOfWork]


@pytest.fixture
def service(engine: AsyncEngine) -> Service:
    return make_service(engine)


def make_service(engine: AsyncEngine) -> Service:
    session_factory = async_sessionmaker(engine, expire_on_commit=False)
    started = asyncio.Event()
    handled: list[Reserved] = []
    uows: list[UnitOfWork] = []
    registry = Registry()

    @registry.register
    async def reserve(cmd: Reserve, uow: UnitOfWork) -> str:
        uow.stock.add(Stock(cmd.sku))
        await uow.session.flush()  # the row is written, in the open transaction
        started.set()
        if cmd.wait == "database":
            await uow.session.execute(sqlalchemy.text("SELECT pg_sleep(30)"))
        elif cmd.wait == "forever":
            await asyncio.Event().wait()
        return cmd.sku

    @registry.register(uow=False)
    async def on_reserved(event: Reserved) -> None:
        handled.append(event)

    def uow() -> UnitOfWork:
        uows.append(UnitOfWork(session_factory, stock=AsyncSqlAlchemyRepository(Stock, key="sku")))
        return uows[-1]

    return Service(AsyncMessageBus(registry, uow=uow), session_factory, started, handled, uows)


async def stored(service: Service) -> list[str]:
    async with service.session_factory() as session:
        return list(await session.scalars(sqlalchemy.select(Stock.sku).order_by(Stock.sku)))


def checked_out(engine: AsyncEngine) -> int:
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined,no-any-return]


async def test_a_cancelled_handle_rolls_back_dispatches_nothing_and_reaches_the_caller(
    service: Service, engine: AsyncEngine, pool_events: list[str]
) -> None:
    task = asyncio.create_task(service.bus.handle(Reserve("LAMP")))
    await service.started.wait()
    assert 1 == checked_out(engine)  # the attempt's transaction is open
    pool_events.clear()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert ["reset", "checkin"] == pool_events  # rolled back; the connection kept for reuse
    assert [] == await stored(service)
    assert [] == service.handled
    assert 0 == checked_out(engine)
    assert not service.uows[0].session.in_transaction()
    # The bus goes on serving: the next command is committed and its event handled.
    assert "CHAIR" == await service.bus.handle(Reserve("CHAIR", wait="no"))
    assert ["CHAIR"] == await stored(service)
    assert [Reserved("CHAIR")] == service.handled


async def test_a_handle_that_times_out_is_rolled_back_and_the_caller_gets_the_timeout(
    service: Service, engine: AsyncEngine
) -> None:
    handling = asyncio.create_task(service.bus.handle(Reserve("LAMP")))
    await service.started.wait()  # the handler waits (forever), its row flushed
    assert 1 == checked_out(engine)

    # A timeout that has run out by now: wait_for cancels the handle, waits for
    # it to end (Python 3.10 to 3.13 alike), and raises TimeoutError, unless the
    # handle swallowed the cancellation and returned.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(handling, timeout=0)

    assert handling.cancelled()
    assert [] == await stored(service)
    assert [] == service.handled
    assert 0 == checked_out(engine)


#: How many times to ask PostgreSQL for a state it reaches at once: each time is
#: a round trip to the server (no clock is read, nothing sleeps).
POLLS = 10_000


async def sleeping_backends(server: AsyncConnection) -> list[int]:
    """The backends running the handler's ``SELECT pg_sleep(30)`` now.

    ``server`` is in autocommit, so every call reads pg_stat_activity afresh (in
    a transaction, it would see the snapshot of its first read).
    """
    query = "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query = :query"
    return list(await server.scalars(sqlalchemy.text(query), {"query": "SELECT pg_sleep(30)"}))


async def until(
    server: AsyncConnection, condition: Callable[[list[int]], bool], failure: str
) -> list[int]:
    """Ask the server for the sleeping backends until ``condition`` holds of them."""
    for _ in range(POLLS):
        backends = await sleeping_backends(server)
        if condition(backends):
            return backends
    pytest.fail(f"{failure} (after {POLLS:,} looks at pg_stat_activity)")


@pytest.mark.integration
async def test_cancelled_while_postgresql_runs_a_statement_rolls_back_at_once(
    postgres_database: str,
) -> None:
    engine = create_async_engine(postgres_database)
    monitor = create_async_engine(postgres_database, isolation_level="AUTOCOMMIT")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        svc = make_service(engine)
        task = asyncio.create_task(svc.bus.handle(Reserve("LAMP", wait="database")))
        await svc.started.wait()
        async with monitor.connect() as server:
            [backend] = await until(server, bool, "the handler's pg_sleep(30) never started")

            task.cancel()
            # At once: the server stops the statement, it does not run its 30 s out.
            await until(
                server,
                lambda running: backend not in running,
                "the server still runs pg_sleep(30) after the cancellation",
            )
        with pytest.raises(asyncio.CancelledError):
            await task

        assert [] == await stored(svc)
        assert [] == svc.handled
        assert 0 == checked_out(engine)
        assert "CHAIR" == await svc.bus.handle(Reserve("CHAIR", wait="no"))
    finally:
        await engine.dispose()
        await monitor.dispose()


async def test_closing_runs_to_its_end_when_cancelled_again(
    service: Service, engine: AsyncEngine, pool_events: list[str]
) -> None:
    uow = UnitOfWork(service.session_factory, stock=AsyncSqlAlchemyRepository(Stock, key="sku"))
    uow.stock.add(Stock("LAMP"))
    await uow.session.flush()

    closing = asyncio.create_task(uow.close())
    await asyncio.sleep(0)  # closing has begun: the rollback is under way
    assert not closing.done()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing

    # Rolled back and returned for reuse, not thrown away half-way.
    assert ["reset", "checkin"] == pool_events
    assert 0 == checked_out(engine)
    assert [] == await stored(service)


async def test_a_cancellation_while_events_are_handled_keeps_what_was_committed(
    engine: AsyncEngine,
) -> None:
    # The command's change was committed before its events were dispatched: a
    # cancellation then undoes only the event handler under way, and the event
    # handlers after it do not run (the docs say so; shield what must finish).
    session_factory = async_sessionmaker(engine, expire_on_commit=False)
    in_event_handler = asyncio.Event()
    handled: list[str] = []
    registry = Registry()

    @registry.register
    async def reserve(cmd: Reserve, uow: UnitOfWork) -> str:
        uow.stock.add(Stock(cmd.sku))  # raises Reserved
        return cmd.sku

    @registry.register
    async def record_reservation(event: Reserved, uow: UnitOfWork) -> None:
        uow.session.add(Stock(f"{event.sku}-reserved"))
        await uow.session.flush()
        in_event_handler.set()
        await asyncio.Event().wait()

    @registry.register(uow=False)
    async def after_it(event: Reserved) -> None:
        handled.append(event.sku)

    bus = AsyncMessageBus(
        registry,
        uow=lambda: UnitOfWork(session_factory, stock=AsyncSqlAlchemyRepository(Stock, key="sku")),
    )
    task = asyncio.create_task(bus.handle(Reserve("LAMP")))
    await in_event_handler.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async with session_factory() as session:
        assert ["LAMP"] == list(await session.scalars(sqlalchemy.select(Stock.sku)))
    assert [] == handled
    assert 0 == checked_out(engine)
