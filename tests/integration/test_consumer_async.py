"""AsyncConsumer on a real Redis (redis.asyncio), with the async bus and unit of work
on aiosqlite and PostgreSQL."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from messagebus import AsyncMessageBus, Metadata, Registry
from messagebus.consumer import AsyncConsumer, StreamEntry
from messagebus.observe import DeadLetter, InMemoryDeadLetters
from messagebus.redis import AsyncRedisStreamReader
from messagebus.sqlalchemy import AsyncSqlAlchemyUnitOfWork
from tests.servers import RedisServer, unique_name

from . import consumer_app as app
from .consumer_app import Handled, Reserve

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class Crash(BaseException):
    """The process dies here."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'consumer.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_database")
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(app.Base.metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def stream() -> str:
    return unique_name("orders")


@pytest.fixture(autouse=True)
def no_failing_orders() -> Iterator[None]:
    yield
    app.FAILING.clear()


def build(engine: AsyncEngine, letters: Any) -> AsyncMessageBus:
    registry = Registry()
    factory = async_sessionmaker(engine, expire_on_commit=False)

    @registry.register
    async def reserve(cmd: Reserve, uow: AsyncSqlAlchemyUnitOfWork, metadata: Metadata) -> None:
        if cmd.order in app.FAILING:
            raise app.Fail(f"cannot reserve {cmd.order}")
        if not await uow.claim_incoming(str(metadata.message_id), "reserve"):
            return
        uow.session.add(
            Handled(message_id=str(metadata.message_id), order=cmd.order, handler="reserve")
        )

    return AsyncMessageBus(
        registry,
        uow=lambda: AsyncSqlAlchemyUnitOfWork(factory, inbox_table=app.INBOX),
        dead_letters=letters,
        sleep=_no_sleep,
    )


async def _no_sleep(_: float) -> None:
    return None


async def reader(
    client: redis.asyncio.Redis, stream: str, name: str = "c1", **options: Any
) -> AsyncRedisStreamReader:
    options.setdefault("claim_idle", 0)
    options.setdefault("block", 0.01)
    reader = AsyncRedisStreamReader(
        client, group="reservations", streams=[stream], consumer=name, **options
    )
    await reader.setup()
    await reader.setup()  # the group exists: nothing to do
    return reader


async def publish(client: redis.asyncio.Redis, stream: str, *orders: str) -> None:
    for order in orders:
        await client.xadd(stream, app.fields(Reserve(order)))


async def handled(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list(await connection.scalars(select(Handled.order).order_by(Handled.id)))


async def pending(client: redis.asyncio.Redis, stream: str) -> int:
    return int((await client.xpending(stream, "reservations"))["pending"])


class AsyncLetters:
    """A dead-letter store whose add is awaited."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def add(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


async def test_messages_are_handled_in_order_and_acknowledged_and_bad_ones_are_dead_letters(
    engine: AsyncEngine, client: redis.asyncio.Redis, stream: str
) -> None:
    await publish(client, stream, "o1", "o2")
    await client.xadd(stream, {"name": "nothing else"})
    await publish(client, stream, "o3")
    letters = AsyncLetters()
    consumer = AsyncConsumer(build(engine, letters), await reader(client, stream, batch=2))

    while await consumer.drain():
        pass

    assert (["o1", "o2", "o3"], 0) == (await handled(engine), await pending(client, stream))
    [letter] = letters.letters
    assert "missing field(s): id, version, payload, metadata, key" in letter.error
    assert (4, 3, 1) == (
        consumer.summary.read,
        consumer.summary.handled,
        consumer.summary.dead_lettered,
    )


async def test_a_failed_handling_is_delivered_again_and_is_a_dead_letter_on_its_last_delivery(
    engine: AsyncEngine, client: redis.asyncio.Redis, stream: str
) -> None:
    app.FAILING.add("o1")
    await publish(client, stream, "o1", "o2")
    letters = InMemoryDeadLetters()
    consumer = AsyncConsumer(build(engine, letters), await reader(client, stream), max_deliveries=2)

    while await consumer.drain():
        pass

    assert (["o2"], 0) == (await handled(engine), await pending(client, stream))
    [letter] = letters.letters
    assert ("Fail: cannot reserve o1", 2) == (letter.error, letter.attempts)


async def test_an_entry_that_stopped_the_consumer_too_often_is_a_dead_letter(
    engine: AsyncEngine, client: redis.asyncio.Redis, stream: str
) -> None:
    await publish(client, stream, "o1")
    letters = InMemoryDeadLetters()
    bus = build(engine, letters)
    crashing = AsyncConsumer(bus, await reader(client, stream, "c0"), max_deliveries=1)

    async def crash(*args: object) -> None:
        raise Crash

    crashing.handle = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await crashing.run_once()
    last = AsyncConsumer(bus, await reader(client, stream, "c1"), max_deliveries=1)
    await last.drain()

    assert ([], 0) == (await handled(engine), await pending(client, stream))
    assert ["delivered 2 times"] == [letter.error[:17] for letter in letters.letters]


async def test_an_entry_whose_dead_letter_cannot_be_stored_is_left_pending(
    engine: AsyncEngine, client: redis.asyncio.Redis, stream: str
) -> None:
    class Broken:
        async def add(self, letter: DeadLetter) -> None:
            raise OSError("the store is down")

    await client.xadd(stream, {"garbage": "1"})
    consumer = AsyncConsumer(build(engine, Broken()), await reader(client, stream))

    await consumer.run_once()

    assert (1, 0) == (await pending(client, stream), consumer.summary.dead_lettered)


@pytest.mark.parametrize("restart", ["same consumer", "another consumer"])
async def test_after_a_crash_before_the_ack_a_restart_handles_every_message_once(
    engine: AsyncEngine, client: redis.asyncio.Redis, stream: str, restart: str
) -> None:
    await publish(client, stream, "o1", "o2", "o3")
    bus = build(engine, InMemoryDeadLetters())
    first = AsyncConsumer(bus, await reader(client, stream, "c1", batch=1))
    acked: list[StreamEntry] = []

    async def ack(entries: list[StreamEntry]) -> None:
        if acked:  # o2 handled and committed, then the crash
            raise Crash
        acked.extend(entries)
        await AsyncConsumer.ack(first, entries)

    first.ack = ack  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await first.drain()
    await AsyncConsumer(
        bus, await reader(client, stream, "c1" if restart == "same consumer" else "c2")
    ).drain()

    assert (["o1", "o2", "o3"], 0) == (await handled(engine), await pending(client, stream))


async def test_sigterm_stops_the_consumer_after_the_batch_in_hand(
    engine: AsyncEngine, client: redis.asyncio.Redis, stream: str
) -> None:
    await publish(client, stream, "o1", "o2")
    consumer = AsyncConsumer(
        build(engine, InMemoryDeadLetters()), await reader(client, stream, batch=2)
    )
    handle = consumer.handle

    async def handle_then_signal(message: Any, metadata: Metadata) -> None:
        await handle(message, metadata)
        os.kill(os.getpid(), signal.SIGTERM)

    consumer.handle = handle_then_signal  # type: ignore[method-assign]
    summary = await consumer.run(handle_signals=True)

    assert (["o1", "o2"], 0, 2) == (
        await handled(engine),
        await pending(client, stream),
        summary.handled,
    )
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


async def test_while_redis_is_down_the_async_consumer_waits_and_goes_on_when_it_is_back(
    engine: AsyncEngine, redis_server: RedisServer
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    stream = unique_name("orders")
    await publish(client, stream, "o1", "o2")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            redis_server.start()

    consumer = AsyncConsumer(
        build(engine, InMemoryDeadLetters()),
        await reader(client, stream, batch=1),
        sleep=sleep,
        backoff=(1.0, 10.0),
    )
    handle = consumer.handle

    async def handle_and_crash_redis_once(message: Any, metadata: Metadata) -> None:
        await handle(message, metadata)
        if not waits and message == Reserve("o1"):
            redis_server.kill()
        if message == Reserve("o2"):
            consumer.stop()

    consumer.handle = handle_and_crash_redis_once  # type: ignore[method-assign]
    summary = await consumer.run()

    assert ([1.0, 2.0], ["o1", "o2"]) == (waits, await handled(engine))
    assert (0, 2) == (await pending(client, stream), summary.handled)
    await client.aclose()
