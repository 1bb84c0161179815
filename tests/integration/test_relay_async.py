"""The asyncio relay on a real Redis: the same protocol, awaited.

The tests are coroutines, run by anyio's pytest plugin on asyncio.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio
import sqlalchemy as sa
import tenacity
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from structlog.testing import capture_logs

from messagebus.redis import AsyncRedisPublisher
from messagebus.relay import AsyncRelay, BrokerUnavailable, Published, RelayStats
from messagebus.sqlalchemy import AsyncSqlAlchemyOutbox, AsyncSqlAlchemyUnitOfWork, Claim
from tests.servers import RedisServer, unique_name

from ._relay_helpers import first_seen, make_outbox, message, read_stream, wait_for_listener, write

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
def urls(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_database_factory: Callable[[], str]
) -> tuple[str, str]:
    """The same database, as a sync URL (to write rows) and an async one."""
    if request.param == "sqlite":
        path = tmp_path / "outbox.db"
        return f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}"
    url = postgres_database_factory()
    return url, url


@pytest.fixture
async def engines(urls: tuple[str, str]) -> AsyncIterator[tuple[sa.Engine, AsyncEngine]]:
    sync_engine, async_engine = sa.create_engine(urls[0]), create_async_engine(urls[1])
    yield sync_engine, async_engine
    await async_engine.dispose()
    sync_engine.dispose()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=60)  # blocking reads below
    yield client
    await client.aclose()


@pytest.fixture
def reader(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


class Crash(BaseException):
    """The relay's process dies here."""


async def test_every_row_is_published_in_order_and_marked_sent(
    engines: tuple[sa.Engine, AsyncEngine], client: redis.asyncio.Redis, reader: redis.Redis
) -> None:
    store = make_outbox(engines[0])
    outbox = AsyncSqlAlchemyOutbox(engines[1], table=store.table)
    stream = unique_name("relay")
    pairs = [(f"k{n % 3}", n) for n in range(20)]
    write(store, [message(stream, key, n) for key, n in pairs])

    relay = AsyncRelay(outbox, AsyncRedisPublisher(client), batch_size=6, listen=False)
    stats = await relay.run_until_idle()

    assert pairs == read_stream(reader, stream)
    assert (20, 4, 0) == (stats.sent, stats.batches, await outbox.pending())


@pytest.mark.parametrize("point", ["after claim", "after publish", "after mark"])
async def test_after_a_crash_at_a_step_a_new_relay_delivers_every_row_in_order(
    engines: tuple[sa.Engine, AsyncEngine],
    client: redis.asyncio.Redis,
    reader: redis.Redis,
    point: str,
) -> None:
    store = make_outbox(engines[0])
    outbox = AsyncSqlAlchemyOutbox(engines[1], table=store.table)
    stream = unique_name("relay")
    pairs = [(f"k{n % 3}", n) for n in range(20)]
    write(store, [message(stream, key, n) for key, n in pairs])

    class CrashingRelay(AsyncRelay):
        async def claim(self) -> Claim:
            claim = await super().claim()
            if point == "after claim" and self.stats.batches == 1:
                await self.outbox.release(claim)  # the process's connections die with it
                raise Crash(point)
            return claim

        async def publish(self, claim: Claim) -> Published:
            published = await super().publish(claim)
            if point == "after publish" and self.stats.batches == 1:
                raise Crash(point)
            return published

        async def mark(self, claim: Claim, published: Published) -> None:
            await super().mark(claim, published)
            if point == "after mark":
                raise Crash(point)

    publisher = AsyncRedisPublisher(client)
    with pytest.raises(Crash, match=point):
        await CrashingRelay(outbox, publisher, batch_size=5, listen=False).run_until_idle()
    await AsyncRelay(outbox, publisher, batch_size=5, listen=False).run_until_idle()

    expected: dict[str, list[int]] = {}
    for key, n in pairs:
        expected.setdefault(key, []).append(n)
    assert expected == first_seen(read_stream(reader, stream))
    assert 0 == await outbox.pending()


async def test_a_commit_of_an_async_unit_of_work_wakes_the_running_relay(
    engines: tuple[sa.Engine, AsyncEngine], client: redis.asyncio.Redis
) -> None:
    store = make_outbox(engines[0])
    outbox = AsyncSqlAlchemyOutbox(engines[1], table=store.table)
    stream = unique_name("relay")
    relay = AsyncRelay(outbox, AsyncRedisPublisher(client), poll_interval=3600, listen=True)
    task = asyncio.create_task(relay.run())
    try:
        uow = AsyncSqlAlchemyUnitOfWork(async_sessionmaker(engines[1]), outbox_table=store.table)
        uow.stage_outgoing([message(stream, "k", 1)])
        await uow.commit()
        await uow.close()
        # Blocks on Redis; the bound only turns a hang into a failure (no poll for an hour).
        found = await client.xread({stream: "0-0"}, block=30_000)
    finally:
        relay.stop()
        stats = await task
    assert 1 == len(found[0][1])
    assert 1 == stats.sent


async def test_the_running_relay_backs_off_while_redis_is_down_then_goes_on(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    sync_engine = sa.create_engine(f"sqlite:///{path}")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    store = make_outbox(sync_engine)
    outbox = AsyncSqlAlchemyOutbox(engine, table=store.table)
    stream = unique_name("relay")
    write(store, [message(stream, "k", n) for n in range(3)])
    client = redis.asyncio.Redis.from_url(redis_server.url)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            redis_server.start()

    relay = AsyncRelay(
        outbox,
        AsyncRedisPublisher(client),
        sleep=sleep,
        backoff=tenacity.wait_exponential(multiplier=1, max=3),
        on_batch=lambda stats: relay.stop(),
        listen=False,
        retention=dt.timedelta(days=1),
    )
    redis_server.stop()
    with pytest.raises(BrokerUnavailable):
        await relay.relay_batch()
    stats = await relay.run()

    assert [1.0, 2.0, 3.0] == waits
    assert (3, 1) == (stats.sent, stats.outages)
    await client.aclose()
    await engine.dispose()
    sync_engine.dispose()


async def test_stop_before_run_starts_ends_it_at_once(
    engines: tuple[sa.Engine, AsyncEngine], client: redis.asyncio.Redis
) -> None:
    store = make_outbox(engines[0])
    outbox = AsyncSqlAlchemyOutbox(engines[1], table=store.table)
    relay = AsyncRelay(outbox, AsyncRedisPublisher(client), poll_interval=3600)

    relay.stop()
    stats = await relay.run()

    assert 0 == stats.batches


async def test_the_async_store_parks_lists_retries_and_deletes_like_the_sync_one(
    engines: tuple[sa.Engine, AsyncEngine],
) -> None:
    store = make_outbox(engines[0])
    outbox = AsyncSqlAlchemyOutbox(engines[1], table=store.table, max_tries=1)
    write(store, [message("s", "a", 1), message("s", "b", 2)])

    claim = await outbox.claim(10)
    first, second = claim.entries
    await outbox.finish(claim, [second.id], {first.id: "refused"})

    assert [first.id] == [entry.id for entry in await outbox.list_parked(limit=5)]
    assert 1 == await outbox.retry_parked()
    assert 1 == await outbox.pending()
    assert 1 == await outbox.delete_sent(dt.timedelta(0))
    assert "messagebus_outbox" in repr(outbox)
    await outbox.create_table()  # exists already: nothing happens


async def test_the_async_publisher_trims_but_keeps_what_a_group_has_pending(
    client: redis.asyncio.Redis, reader: redis.Redis
) -> None:
    stream = unique_name("trim")
    publisher = AsyncRedisPublisher(client, maxlen=2)
    await AsyncRedisPublisher(client).publish([message(stream, "k", n) for n in range(3)])
    await client.xgroup_create(stream, "workers", id="0")
    await client.xreadgroup("workers", "c1", {stream: ">"}, count=1)  # the first: pending

    assert [None] * 3 == await publisher.publish([message(stream, "k", n) for n in range(3, 6)])

    assert [("k", n) for n in range(6)] == read_stream(reader, stream)
    (major, _, _) = await publisher.version()
    assert major >= 5
    assert "maxlen=2" in repr(publisher)


async def test_an_unreachable_redis_is_broker_unavailable(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    redis_server.stop()
    publisher = AsyncRedisPublisher(client)

    with pytest.raises(BrokerUnavailable, match="Redis"):
        await publisher.publish([message("s", "k", 1)])
    with pytest.raises(BrokerUnavailable, match="Redis"):
        await publisher.version()
    await client.aclose()


class RestartOnFirstWait(tenacity.wait.wait_base):
    """A backoff that brings Redis back during the first wait, and waits little."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.calls = 0

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        self.calls += 1
        if self.calls == 1:
            self.server.start()
        return 0.01


async def test_the_running_relay_waits_out_an_outage_by_itself_and_loops_on_full_batches(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.db"
    sync_engine = sa.create_engine(f"sqlite:///{path}")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    store = make_outbox(sync_engine)
    outbox = AsyncSqlAlchemyOutbox(engine, table=store.table)
    stream = unique_name("relay")
    write(store, [message(stream, "k", n) for n in range(3)])
    client = redis.asyncio.Redis.from_url(redis_server.url)
    backoff = RestartOnFirstWait(redis_server)

    def stop_when_done(stats: RelayStats) -> None:
        if stats.sent == 3:
            relay.stop()

    relay = AsyncRelay(
        outbox,
        AsyncRedisPublisher(client),
        batch_size=1,
        poll_interval=3600,
        backoff=backoff,
        retention=None,
        cleanup_interval=0,
        on_batch=stop_when_done,
        listen=False,
    )
    redis_server.stop()
    stats = await relay.run()

    assert (3, 3, 1, 1) == (stats.sent, stats.batches, stats.outages, backoff.calls)
    await client.aclose()
    await engine.dispose()
    sync_engine.dispose()


async def test_stop_from_another_thread_ends_the_run(
    engines: tuple[sa.Engine, AsyncEngine], client: redis.asyncio.Redis
) -> None:
    store = make_outbox(engines[0])
    outbox = AsyncSqlAlchemyOutbox(engines[1], table=store.table)
    started = asyncio.Event()
    relay = AsyncRelay(outbox, AsyncRedisPublisher(client), poll_interval=3600, listen=False)

    async def stop_from_a_thread() -> None:
        await started.wait()
        await asyncio.to_thread(relay.stop)

    original = outbox.delete_sent

    async def delete_sent(older_than: dt.timedelta) -> int:
        started.set()  # the run has begun: its first clean-up
        return await original(older_than)

    outbox.delete_sent = delete_sent  # type: ignore[method-assign]
    stopper = asyncio.create_task(stop_from_a_thread())
    stats = await relay.run()
    await stopper

    assert 0 == stats.batches
    relay.stop()  # again, its loop still running: nothing happens


def test_stop_after_the_loop_closed_does_nothing(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "outbox.db"
    sync_engine = sa.create_engine(f"sqlite:///{path}")
    store = make_outbox(sync_engine)

    async def run() -> AsyncRelay:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        client = redis.asyncio.Redis.from_url(redis_url)
        outbox = AsyncSqlAlchemyOutbox(engine, table=store.table)
        relay = AsyncRelay(outbox, AsyncRedisPublisher(client), listen=False)
        relay.stop()
        await relay.run()
        await client.aclose()
        await engine.dispose()
        return relay

    relay = asyncio.run(run())
    relay.stop()  # its loop is closed
    sync_engine.dispose()


async def test_a_claim_on_a_missing_table_raises(engines: tuple[sa.Engine, AsyncEngine]) -> None:
    outbox = AsyncSqlAlchemyOutbox(engines[1])  # its table was never created

    with pytest.raises(sa.exc.DBAPIError):
        await outbox.claim(10)
    assert "AsyncSqlAlchemyOutbox" in repr(outbox)


async def test_two_async_claims_on_postgresql_never_share_a_key(
    postgres_database_factory: Callable[[], str],
) -> None:
    url = postgres_database_factory()
    sync_engine = sa.create_engine(url)
    engine = create_async_engine(url)
    store = make_outbox(sync_engine)
    outbox = AsyncSqlAlchemyOutbox(engine, table=store.table)
    write(store, [message("s", "a", n) for n in range(3)])

    first = await outbox.claim(10)
    second = await outbox.claim(10)
    assert ([0, 1, 2], []) == (
        [int(e.message.payload[-2]) for e in first.entries],
        second.entries,
    )
    await outbox.release(second)
    await outbox.finish(first, [], {})  # nothing sent: all stay pending
    assert 3 == await outbox.pending()
    await engine.dispose()
    sync_engine.dispose()


async def test_the_async_publisher_leaves_a_short_stream_and_refuses_a_bad_maxlen(
    client: redis.asyncio.Redis, reader: redis.Redis
) -> None:
    stream = unique_name("trim")
    await client.xadd(stream, {"a": "1"})
    await client.xgroup_create(stream, "workers", id="0")

    assert 0 == await AsyncRedisPublisher(client, maxlen=5)._trim(stream, 5)
    assert [None] == await AsyncRedisPublisher(client, maxlen=1).publish([message(stream, "k", 1)])
    assert 2 == reader.xlen(stream)  # the group was given neither: both kept
    with pytest.raises(ValueError, match="maxlen must be at least 1, not 0"):
        AsyncRedisPublisher(client, maxlen=0)


async def test_a_commit_in_another_process_wakes_the_async_relay_by_notify(
    postgres_database_factory: Callable[[], str], client: redis.asyncio.Redis
) -> None:
    url = postgres_database_factory()
    sync_engine = sa.create_engine(url)
    engine = create_async_engine(url)
    store = make_outbox(sync_engine)
    outbox = AsyncSqlAlchemyOutbox(engine, table=store.table)
    stream = unique_name("relay")
    relay = AsyncRelay(outbox, AsyncRedisPublisher(client), poll_interval=3600, listen=True)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.to_thread(wait_for_listener, sync_engine)
        # Written outside a unit of work: no in-process wake-up, only the NOTIFY.
        write(store, [message(stream, "k", 1)])
        found = await client.xread({stream: "0-0"}, block=30_000)  # bounded: a hang fails
    finally:
        relay.stop()
        stats = await task
    assert 1 == len(found[0][1])
    assert 1 == stats.sent
    await engine.dispose()
    sync_engine.dispose()


async def test_a_trim_that_fails_leaves_the_entries_published(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    admin.acl_setuser(
        "relay", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-xinfo"]
    )
    client = redis.asyncio.Redis.from_url(redis_server.url, username="relay", password="pw")
    stream, broken = unique_name("trim"), unique_name("not-a-stream")
    admin.set(broken, "a string")
    publisher = AsyncRedisPublisher(client, maxlen=1)

    with capture_logs() as logs:
        results = await publisher.publish(
            [message(stream, "k", 1), message(stream, "k", 2), message(broken, "k", 3)]
        )

    assert [False, False, True] == [isinstance(r, redis.ResponseError) for r in results]
    assert 2 == admin.xlen(stream)
    assert ["stream_trim_failed"] == [entry["event"] for entry in logs]
    await client.aclose()
    admin.close()
