"""The allocation example's async side on a real database (aiosqlite and PostgreSQL):
bootstrap_async and its handlers through AsyncMessageBus, the read model, and
many tasks allocating against one product. Its web API is tested over HTTP, in
tests/e2e/test_async_allocation_api.py.

The tests are coroutines, run by anyio's pytest plugin on asyncio.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy
import structlog
import tenacity
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.typing import EventDict

from allocation.adapters import orm
from allocation.bootstrap import AsyncService, bootstrap_async
from allocation.domain import commands, events
from allocation.service_layer import handlers
from allocation.service_layer.handlers import InvalidSku
from messagebus import AsyncMessageBus, ConfigurationError, Event, RetryPolicy

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[EventDict]]:
    with structlog.testing.capture_logs() as entries:
        yield entries


class Recorder:
    """Notifications and publishing, recorded (they run in threads)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.published: list[Event] = []

    def send(self, destination: str, message: str) -> None:
        self.sent.append(message)

    def publish(self, channel: str, event: Event) -> None:
        self.published.append(event)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'allocation.sqlite3'}"  # made async by make_async_engine
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = orm.make_async_engine(database_url)
    await orm.create_schema_async(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def service(engine: AsyncEngine, recorder: Recorder) -> AsyncService:
    async def no_sleep(_: float) -> None:
        pass

    return bootstrap_async(engine, notifications=recorder, publish=recorder.publish, sleep=no_sleep)


async def test_allocating_through_the_async_bus_updates_the_read_model(
    service: AsyncService, recorder: Recorder
) -> None:
    bus = service.bus
    await bus.handle(commands.CreateBatch("b1", "LAMP", 10))
    await bus.handle(commands.CreateBatch("b2", "LAMP", 10, datetime.date(2031, 1, 1)))

    assert "b1" == await bus.handle(commands.Allocate("o1", "LAMP", 6))
    assert "b1" == await bus.handle(commands.Allocate("o2", "LAMP", 4))
    assert "b1" == await bus.handle(commands.Allocate("o1", "LAMP", 6))  # again: harmless

    assert [{"sku": "LAMP", "batchref": "b1"}] == await service.views.for_order("o1")
    assert [events.Allocated("o1", "LAMP", 6, "b1"), events.Allocated("o2", "LAMP", 4, "b1")] == (
        recorder.published
    )
    with pytest.raises(InvalidSku, match="Invalid sku NOPE"):
        await bus.handle(commands.Allocate("o3", "NOPE", 1))


async def test_out_of_stock_sends_a_notification(service: AsyncService, recorder: Recorder) -> None:
    await service.bus.handle(commands.CreateBatch("b1", "LAMP", 1))

    assert await service.bus.handle(commands.Allocate("o1", "LAMP", 5)) is None

    assert ["Out of stock for LAMP"] == recorder.sent


async def test_shrinking_a_batch_reallocates_in_the_database_and_the_read_model(
    service: AsyncService, engine: AsyncEngine
) -> None:
    bus = service.bus
    await bus.handle(commands.CreateBatch("b1", "TABLE", 50))
    await bus.handle(commands.CreateBatch("b2", "TABLE", 50, datetime.date(2031, 1, 1)))
    await bus.handle(commands.Allocate("o1", "TABLE", 20))
    await bus.handle(commands.Allocate("o2", "TABLE", 20))

    await bus.handle(commands.ChangeBatchQuantity("b1", "TABLE", 25))

    assert {"b1": 5, "b2": 30} == await available(engine, "TABLE")
    where = sorted(
        [row["batchref"] for orderid in ("o1", "o2") for row in await views_of(service, orderid)]
    )
    assert ["b1", "b2"] == where


async def views_of(service: AsyncService, orderid: str) -> list[dict[str, str]]:
    return await service.views.for_order(orderid)


async def available(engine: AsyncEngine, sku: str) -> dict[str, int]:
    """Batch reference -> available quantity, from the write model's tables."""
    b, lines, a = orm.batches, orm.order_lines, orm.allocations
    allocated = (
        sqlalchemy.select(a.c.batch_id, sqlalchemy.func.sum(lines.c.qty).label("qty"))
        .join(lines, a.c.orderline_id == lines.c.id)
        .group_by(a.c.batch_id)
        .subquery()
    )
    query = (
        sqlalchemy.select(
            b.c.reference,
            b.c._purchased_quantity - sqlalchemy.func.coalesce(allocated.c.qty, 0),
        )
        .outerjoin(allocated, allocated.c.batch_id == b.c.id)
        .where(b.c.sku == sku)
    )
    async with engine.connect() as connection:
        return {ref: int(qty) for ref, qty in await connection.execute(query)}


def test_bootstrap_async_needs_an_engine_unless_given_a_unit_of_work_and_views() -> None:
    with pytest.raises(TypeError, match="needs an engine"):
        bootstrap_async()


def test_the_sync_handlers_are_refused_by_the_async_bus(recorder: Recorder) -> None:
    # Hence a registry of async handlers of its own, over the same domain.
    dependencies = {"notifications": recorder, "publish": recorder.publish, "views": None}

    with pytest.raises(ConfigurationError, match=r"add_batch is a plain function.*async def"):
        AsyncMessageBus(handlers.registry, uow=lambda: None, dependencies=dependencies)


# -- many tasks, one bus, one product -------------------------------------------------

TASKS = 8
LINES_PER_TASK = 6
QTY = 2
# Every conflict has a winner, so the tasks always progress; this only bounds the
# retries of one unlucky command (without real waits, it has needed up to 26).
MAX_ATTEMPTS = 200
WAIT_MAX = 0.1


@pytest.mark.integration
@pytest.mark.parametrize("isolation_level", ["REPEATABLE READ", "READ COMMITTED"])
async def test_concurrent_tasks_allocate_as_a_serial_run_does_on_postgresql(
    postgres_database: str, isolation_level: str, logs: list[EventDict]
) -> None:
    # Every allocation changes the same aggregate: the tasks conflict (a stale
    # version, or a serialisation failure) and the bus retries, as for threads.
    engine = orm.make_async_engine(
        postgres_database, isolation_level=isolation_level, pool_size=TASKS * 2
    )
    recorder = Recorder()
    waits: list[float] = []

    async def record_and_yield(seconds: float) -> None:
        """The bus's sleep between attempts: the wait asked for is recorded, not slept."""
        waits.append(seconds)
        await asyncio.sleep(0)  # the other tasks run, as they would while it slept

    try:
        await orm.create_schema_async(engine)
        service = bootstrap_async(
            engine,
            notifications=recorder,
            publish=recorder.publish,
            retry=RetryPolicy(
                stop=tenacity.stop_after_attempt(MAX_ATTEMPTS),
                wait=tenacity.wait_random_exponential(multiplier=0.005, max=WAIT_MAX),
            ),
            sleep=record_and_yield,
        )
        await service.bus.handle(commands.CreateBatch("now", "SHARED", 40))
        await service.bus.handle(
            commands.CreateBatch("soon", "SHARED", 30, datetime.date(2031, 1, 1))
        )

        async def allocate(task: int) -> None:
            for i in range(LINES_PER_TASK):
                await service.bus.handle(commands.Allocate(f"t{task}-o{i}", "SHARED", QTY))

        await asyncio.gather(*(allocate(task) for task in range(TASKS)))

        # 48 lines of 2 for 70 units: 35 lines fit (as a serial run: 20 now, 15 soon).
        assert {"now": 0, "soon": 0} == await available(engine, "SHARED")
        allocated = [e for e in recorder.published if isinstance(e, events.Allocated)]
        assert 35 == len({e.orderid for e in allocated}) == len(allocated)
        assert TASKS * LINES_PER_TASK - 35 == len(recorder.sent)
        read_model = [
            (e.orderid, row["batchref"])
            for e in allocated
            for row in await service.views.for_order(e.orderid)
        ]
        assert sorted((e.orderid, e.batchref) for e in allocated) == sorted(read_model)
    finally:
        await engine.dispose()
    assert not [log for log in logs if log["event"] == "message_failed"]
    retried = [log for log in logs if log["event"] == "message_attempt_failed"]
    assert retried, "the tasks never conflicted: this test proved nothing"
    # Each retry waited as the policy says (through the sleep given to the bus).
    assert len(retried) == len(waits)
    assert all(0 <= wait <= WAIT_MAX for wait in waits), waits
