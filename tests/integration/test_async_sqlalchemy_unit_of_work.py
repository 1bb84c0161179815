"""messagebus.sqlalchemy's async unit of work and repositories, on aiosqlite and on
PostgreSQL (psycopg 3, async), through AsyncMessageBus too.

The tests are coroutines, run by anyio's pytest plugin on asyncio.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy
import structlog
from sqlalchemy import ForeignKey, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    reconstructor,
    relationship,
    selectinload,
    sessionmaker,
)
from sqlalchemy.orm.exc import StaleDataError
from structlog.typing import EventDict

import messagebus
from messagebus import AsyncMessageBus, Command, Event, Registry, RetryPolicy
from messagebus.sqlalchemy import (
    AsyncSqlAlchemyRepository,
    AsyncSqlAlchemyUnitOfWork,
    SqlAlchemyRepository,
    SqlAlchemyUnitOfWork,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[EventDict]]:
    """The bus's log events, captured (not rendered: a traceback renders slowly)."""
    with structlog.testing.capture_logs() as entries:
        yield entries


# -- a small aggregate: an order (the root) and its lines ----------------------


class Base(DeclarativeBase):
    pass


@attrs.frozen
class LineAdded(Event):
    number: str
    sku: str


class Order(Base):
    __tablename__ = "async_uow_orders"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(unique=True)
    version: Mapped[int] = mapped_column(nullable=False)
    lines: Mapped[list[Line]] = relationship(cascade="all, delete-orphan", order_by="Line.id")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    def __init__(self, number: str) -> None:
        self.number = number
        self.lines = []
        self.events: list[Event] = []

    @reconstructor
    def _loaded(self) -> None:
        self.events = []

    def add_line(self, sku: str, qty: int) -> None:
        self.lines.append(Line(sku=sku, qty=qty))
        self.events.append(LineAdded(self.number, sku))


class Line(Base):
    __tablename__ = "async_uow_lines"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("async_uow_orders.id"))
    sku: Mapped[str]
    qty: Mapped[int]


class Note(Base):
    """Not versioned, found by its primary key."""

    __tablename__ = "async_uow_notes"

    key: Mapped[str] = mapped_column(primary_key=True)
    text: Mapped[str]


class OrderRepository(AsyncSqlAlchemyRepository[Order]):
    """A repository with queries of its own."""

    async def with_sku(self, sku: str) -> list[Order]:
        return await self.all(select(Order).join(Order.lines).where(Line.sku == sku).distinct())

    async def first_with_sku(self, sku: str) -> Order | None:
        return await self.first(select(Order).join(Order.lines).where(Line.sku == sku))


def orders() -> OrderRepository:
    # The domain's methods touch the lines: load them with the order.
    return OrderRepository(Order, key="number", options=[selectinload(Order.lines)])


class UnitOfWork(AsyncSqlAlchemyUnitOfWork):
    """A unit of work whose repositories mypy knows."""

    orders: OrderRepository
    notes: AsyncSqlAlchemyRepository[Note]


SessionFactory = async_sessionmaker[AsyncSession]


def new_uow(session_factory: SessionFactory) -> UnitOfWork:
    return UnitOfWork(
        session_factory, orders=orders(), notes=AsyncSqlAlchemyRepository(Note, key="key")
    )


# -- the two databases ----------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}"
    url: str = request.getfixturevalue("postgres_database")  # postgresql+psycopg: async too
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


async def store_order(session_factory: SessionFactory, number: str = "o1", *skus: str) -> None:
    async with new_uow(session_factory) as uow:
        order = Order(number)
        for sku in skus:
            order.add_line(sku, 1)
        uow.orders.add(order)
        await uow.commit()


async def stored_version(session_factory: SessionFactory, number: str = "o1") -> int:
    async with session_factory() as session:
        version = await session.scalar(select(Order.version).where(Order.number == number))
        assert version is not None
        return version


def checked_out(engine: AsyncEngine) -> int:
    """Connections taken from the pool and not given back."""
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined,no-any-return]


# -- commit, rollback, close ------------------------------------------------------


async def test_committed_changes_are_seen_by_the_next_unit_of_work(
    session_factory: SessionFactory,
) -> None:
    await store_order(session_factory, "o1", "LAMP")

    async with new_uow(session_factory) as uow:
        order = await uow.orders.get("o1")
        assert order is not None
        assert [("LAMP", 1)] == [(line.sku, line.qty) for line in order.lines]
        assert 1 == order.version


async def test_work_that_is_not_committed_is_rolled_back_on_close(
    session_factory: SessionFactory, engine: AsyncEngine
) -> None:
    uow = new_uow(session_factory)
    uow.orders.add(Order("o1"))
    await uow.session.flush()
    await uow.close()

    assert 0 == checked_out(engine)
    async with new_uow(session_factory) as uow:
        assert await uow.orders.get("o1") is None


async def test_rollback_discards_the_changes_and_the_events_they_raised(
    session_factory: SessionFactory,
) -> None:
    await store_order(session_factory, "o1")
    uow = new_uow(session_factory)
    order = await uow.orders.get("o1")
    assert order is not None
    order.add_line("LAMP", 2)
    await uow.session.flush()

    await uow.rollback()
    await uow.close()

    assert [] == order.events
    assert [] == uow.collect_new_events()
    async with new_uow(session_factory) as uow:
        order = await uow.orders.get("o1")
        assert order is not None
        assert [] == order.lines


async def test_the_context_manager_rolls_back_on_an_error_and_closes(
    session_factory: SessionFactory, engine: AsyncEngine
) -> None:
    uow = new_uow(session_factory)

    async def fail_in_unit_of_work() -> None:
        async with uow:
            uow.orders.add(Order("o1"))
            await uow.session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_in_unit_of_work()

    assert not uow.session.in_transaction()
    assert 0 == checked_out(engine)
    async with new_uow(session_factory) as uow:
        assert [] == await uow.orders.list()


async def test_events_are_collected_from_every_aggregate_seen_after_commit(
    session_factory: SessionFactory,
) -> None:
    await store_order(session_factory, "o1")
    async with new_uow(session_factory) as uow:
        new = Order("o2")
        new.add_line("CHAIR", 1)
        uow.orders.add(new)
        existing = await uow.orders.get("o1")
        assert existing is not None
        existing.add_line("LAMP", 1)
        await uow.commit()

        assert [LineAdded("o2", "CHAIR"), LineAdded("o1", "LAMP")] == uow.collect_new_events()
        assert [] == uow.collect_new_events()


# -- repositories ------------------------------------------------------------------


async def test_get_finds_by_primary_key_and_by_any_unique_column(
    session_factory: SessionFactory,
) -> None:
    async with new_uow(session_factory) as uow:
        uow.notes.add(Note(key="n1", text="hello"))
        uow.orders.add(Order("o1"))
        await uow.commit()

    async with new_uow(session_factory) as uow:
        note = await uow.notes.get("n1")
        order = await uow.orders.get("o1")

        assert note is not None
        assert "hello" == note.text
        assert order is not None
        assert "o1" == order.number
        assert note is await uow.notes.get("n1")  # the identity map: the same object
        assert await uow.notes.get("n2") is None
        assert await uow.orders.get("o2") is None
        assert (note, order) == uow.seen


async def test_list_first_and_all_load_the_aggregate_and_track_it(
    session_factory: SessionFactory,
) -> None:
    await store_order(session_factory, "o1", "LAMP", "CHAIR")
    await store_order(session_factory, "o2", "CHAIR")
    await store_order(session_factory, "o3", "TABLE")

    async with new_uow(session_factory) as uow:
        listed = await uow.orders.list()
        with_chair = await uow.orders.with_sku("CHAIR")
        first = await uow.orders.first_with_sku("TABLE")

        assert ["o1", "o2", "o3"] == sorted(order.number for order in listed)
        assert ["o1", "o2"] == sorted(order.number for order in with_chair)
        assert first is not None
        assert "o3" == first.number
        # The lines came with their orders: reading them needs no await.
        assert [["LAMP", "CHAIR"], ["CHAIR"], ["TABLE"]] == [
            [line.sku for line in order.lines] for order in sorted(listed, key=lambda o: o.number)
        ]
        assert set(listed) == set(uow.seen)
        assert await uow.orders.first_with_sku("NOTHING") is None


async def test_without_loader_options_an_unloaded_relationship_cannot_be_read(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'lazy.sqlite3'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        session_factory = async_sessionmaker(engine, expire_on_commit=False)
        await store_order(session_factory, "o1", "LAMP")

        async with AsyncSqlAlchemyUnitOfWork(
            session_factory, orders=AsyncSqlAlchemyRepository(Order, key="number")
        ) as uow:
            order = await uow.orders.get("o1")
            assert order is not None

            # SQLAlchemy leaves the driver's coroutine un-awaited: not this test's concern.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                with pytest.raises(sqlalchemy.exc.StatementError, match="greenlet_spawn has not"):
                    _ = order.lines
                gc.collect()
    finally:
        await engine.dispose()


async def test_a_repository_holds_its_own_type_and_works_only_when_bound(
    session_factory: SessionFactory,
) -> None:
    declaration = orders()

    with pytest.raises(RuntimeError, match="is not bound to a unit of work"):
        await declaration.get("o1")
    async with new_uow(session_factory) as uow:
        with pytest.raises(TypeError, match="holds Order aggregates, not Note"):
            uow.orders.add(Note(key="n1", text="x"))  # type: ignore[arg-type]
        assert "<OrderRepository(Order, key='number') bound>" == repr(uow.orders)
    assert "<OrderRepository(Order, key='number') unbound>" == repr(declaration)


# -- the whole aggregate is version-checked -----------------------------------------


async def test_a_change_anywhere_in_the_aggregate_increments_its_version_once_per_commit(
    session_factory: SessionFactory,
) -> None:
    await store_order(session_factory, "o1", "LAMP")

    async with new_uow(session_factory) as uow:  # a line changed: the order's version
        order = await uow.orders.get("o1")
        assert order is not None
        order.lines[0].qty = 5
        await uow.commit()
    assert 2 == await stored_version(session_factory)

    async with new_uow(session_factory) as uow:  # a line added, one removed
        order = await uow.orders.get("o1")
        assert order is not None
        order.add_line("CHAIR", 1)
        del order.lines[0]
        await uow.commit()
    assert 3 == await stored_version(session_factory)

    async with new_uow(session_factory) as uow:  # only read: unchanged
        assert await uow.orders.get("o1") is not None
        await uow.commit()
    assert 3 == await stored_version(session_factory)


async def test_a_concurrent_change_to_the_aggregate_fails_the_later_commit(
    session_factory: SessionFactory,
) -> None:
    await store_order(session_factory, "o1", "LAMP")
    first, second = new_uow(session_factory), new_uow(session_factory)
    try:
        mine, theirs = await first.orders.get("o1"), await second.orders.get("o1")
        assert mine is not None
        assert theirs is not None
        mine.add_line("CHAIR", 1)
        theirs.lines[0].qty = 9
        await first.commit()

        with pytest.raises(StaleDataError) as caught:
            await second.commit()
        await second.rollback()
    finally:
        await first.close()
        await second.close()

    assert messagebus.is_transient(caught.value)
    async with new_uow(session_factory) as uow:
        order = await uow.orders.get("o1")
        assert order is not None
        assert [("LAMP", 1), ("CHAIR", 1)] == [(line.sku, line.qty) for line in order.lines]


async def test_sync_and_async_units_of_work_in_one_process_increment_a_version_once(
    tmp_path: Path,
) -> None:
    # The async unit of work listens to plain Sessions' flushes (an AsyncSession's
    # inner session is one); the sync one to its sessionmaker's class. Both fire
    # for a sync session: the version must still move by one.
    url = f"sqlite:///{tmp_path / 'both.sqlite3'}"
    async_engine = create_async_engine(url.replace("sqlite:", "sqlite+aiosqlite:"))
    sync_engine = sqlalchemy.create_engine(url)
    try:
        Base.metadata.create_all(sync_engine)
        await store_order(async_sessionmaker(async_engine), "o1", "LAMP")
        sync_factory: sessionmaker[Session] = sessionmaker(sync_engine)
        plain_factory = lambda: Session(sync_engine)  # noqa: E731 - a plain Session too
        for factory in (sync_factory, plain_factory):
            with SqlAlchemyUnitOfWork(
                factory, orders=SqlAlchemyRepository(Order, key="number")
            ) as uow:
                order = uow.orders.get("o1")
                order.lines[0].qty += 1  # type: ignore[attr-defined]
                uow.commit()

        assert 3 == await stored_version(async_sessionmaker(async_engine))
    finally:
        sync_engine.dispose()
        await async_engine.dispose()


# -- through the bus ---------------------------------------------------------------


@attrs.frozen
class AddLine(Command[int]):
    number: str
    sku: str


async def store_line_elsewhere(session_factory: SessionFactory, number: str) -> None:
    async with new_uow(session_factory) as uow:
        order = await uow.orders.get(number)
        assert order is not None
        order.lines.append(Line(sku="ELSEWHERE", qty=1))
        await uow.commit()


async def test_the_bus_retries_a_version_conflict_and_dispatches_only_committed_events(
    session_factory: SessionFactory,
) -> None:
    await store_order(session_factory, "o1")
    registry = Registry()
    attempts: list[int] = []
    handled: list[LineAdded] = []

    @registry.register
    async def add_line(cmd: AddLine, uow: UnitOfWork) -> int:
        order = await uow.orders.get(cmd.number)
        assert order is not None
        attempts.append(order.version)
        order.add_line(cmd.sku, 1)
        if len(attempts) == 1:  # someone else changes the order meanwhile
            await store_line_elsewhere(session_factory, cmd.number)
        return len(order.lines)

    @registry.register(uow=False)
    async def on_line_added(event: LineAdded) -> None:
        handled.append(event)

    async def no_sleep(_: float) -> None:
        pass

    bus = AsyncMessageBus(registry, uow=lambda: new_uow(session_factory), sleep=no_sleep)

    assert 2 == await bus.handle(AddLine("o1", "LAMP"))
    assert [1, 2] == attempts
    assert [LineAdded("o1", "LAMP")] == handled
    assert 3 == await stored_version(session_factory)


async def test_a_failed_commit_dispatches_no_event(
    session_factory: SessionFactory, engine: AsyncEngine, logs: list[EventDict]
) -> None:
    await store_order(session_factory, "o1")
    registry = Registry()
    handled: list[LineAdded] = []

    @registry.register
    async def add_line(cmd: AddLine, uow: UnitOfWork) -> int:
        order = await uow.orders.get(cmd.number)
        assert order is not None
        order.add_line(cmd.sku, 1)
        await store_line_elsewhere(session_factory, cmd.number)  # a conflict, every time
        return 0

    @registry.register(uow=False)
    async def on_line_added(event: LineAdded) -> None:
        handled.append(event)

    async def no_sleep(_: float) -> None:
        pass

    bus = AsyncMessageBus(registry, uow=lambda: new_uow(session_factory), sleep=no_sleep)

    with pytest.raises(StaleDataError):
        await bus.handle(AddLine("o1", "LAMP"))
    assert [] == handled
    assert ["retrying", "retrying", "failed"] == [
        entry["outcome"] for entry in logs if entry.get("handler", "").endswith("add_line")
    ]
    assert 1 + 3 == await stored_version(session_factory)  # three attempts, each undone
    assert 0 == checked_out(engine)


@pytest.mark.integration
async def test_a_serialisation_failure_on_postgresql_is_retried(postgres_database: str) -> None:
    engine = create_async_engine(postgres_database, isolation_level="REPEATABLE READ")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        session_factory = async_sessionmaker(engine, expire_on_commit=False)
        await store_order(session_factory, "o1")
        registry = Registry()
        errors: list[BaseException] = []

        @registry.register
        async def add_line(cmd: AddLine, uow: UnitOfWork) -> int:
            order = await uow.orders.get(cmd.number)
            assert order is not None
            order.add_line(cmd.sku, 1)
            if not errors:
                await store_line_elsewhere(session_factory, cmd.number)
            try:
                await uow.session.flush()  # at REPEATABLE READ: a serialisation failure
            except sqlalchemy.exc.OperationalError as exc:
                errors.append(exc)
                raise
            return len(order.lines)

        bus = AsyncMessageBus(
            registry, uow=lambda: new_uow(session_factory), retry=RetryPolicy(wait=lambda _: 0)
        )

        assert 2 == await bus.handle(AddLine("o1", "LAMP"))
        assert 1 == len(errors)
        assert "40001" == getattr(errors[0], "orig", None).sqlstate  # type: ignore[union-attr]
        assert messagebus.is_transient(errors[0])
    finally:
        await engine.dispose()


async def test_many_tasks_share_one_declaration_and_one_bus(
    session_factory: SessionFactory,
) -> None:
    for number in range(8):
        await store_order(session_factory, f"o{number}")
    registry = Registry()
    declaration = orders()

    @registry.register
    async def add_line(cmd: AddLine, uow: AsyncSqlAlchemyUnitOfWork) -> int:
        order = await uow.orders.get(cmd.number)
        assert order is not None
        assert (order,) == uow.seen
        await asyncio.sleep(0)  # let the other tasks in between
        order.add_line(cmd.sku, 1)
        return len(order.lines)

    bus = AsyncMessageBus(
        registry, uow=lambda: AsyncSqlAlchemyUnitOfWork(session_factory, orders=declaration)
    )

    results = await asyncio.gather(*(bus.handle(AddLine(f"o{n}", "LAMP")) for n in range(8)))

    assert [1] * 8 == results
    assert [2] * 8 == [await stored_version(session_factory, f"o{n}") for n in range(8)]


# -- wiring errors --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["session", "commit", "seen", "_private"])
async def test_a_repository_cannot_take_a_name_the_unit_of_work_uses(
    name: str, session_factory: SessionFactory
) -> None:
    with pytest.raises(messagebus.ConfigurationError, match=f"'{name}' cannot name a repository"):
        AsyncSqlAlchemyUnitOfWork(session_factory, **{name: orders()})


async def test_repositories_must_be_async_declarations(session_factory: SessionFactory) -> None:
    sync_declaration: Any = SqlAlchemyRepository(Order, key="number")

    with pytest.raises(messagebus.ConfigurationError, match="must be an AsyncSqlAlchemyRepository"):
        AsyncSqlAlchemyUnitOfWork(session_factory, orders=sync_declaration)


async def test_the_factory_must_make_async_sessions(tmp_path: Path) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'sync.sqlite3'}")
    sync_factory: Any = sessionmaker(engine)
    try:
        with pytest.raises(messagebus.ConfigurationError, match="must make SQLAlchemy AsyncSess"):
            AsyncSqlAlchemyUnitOfWork(sync_factory)
    finally:
        engine.dispose()


def test_a_repository_needs_a_mapped_class_and_one_of_its_columns() -> None:
    class NotMapped:
        pass

    with pytest.raises(messagebus.ConfigurationError, match="is not mapped by SQLAlchemy"):
        AsyncSqlAlchemyRepository(NotMapped, key="id")
    with pytest.raises(messagebus.ConfigurationError, match="no mapped column attribute 'sku'"):
        AsyncSqlAlchemyRepository(Order, key="sku")


async def test_an_unknown_repository_is_an_attribute_error_naming_the_known_ones(
    session_factory: SessionFactory,
) -> None:
    async with new_uow(session_factory) as uow:
        with pytest.raises(AttributeError, match="no repository 'products'; it has: orders, notes"):
            _ = uow.products
