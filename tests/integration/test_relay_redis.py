"""The relay on a real Redis: every row delivered, in order per key, whatever crashes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from messagebus.redis import RedisPublisher
from messagebus.relay import BrokerUnavailable, Published, Relay, RelayStats
from messagebus.sqlalchemy import Claim, SqlAlchemyOutbox, SqlAlchemyUnitOfWork
from tests.servers import RedisServer, unique_name

from ._relay_helpers import (
    first_seen,
    make_engine,
    make_outbox,
    message,
    read_stream,
    wait_for_listener,
    write,
)

pytestmark = pytest.mark.integration

KINDS = ["sqlite", "postgresql"]
KEYS = ["a", "b", "c", "d"]


@pytest.fixture(params=KINDS)
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_database_factory: Callable[[], str]
) -> Iterator[sa.Engine]:
    engine = make_engine(request.param, tmp_path, postgres_database_factory)
    yield engine
    engine.dispose()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=60)  # blocking reads below
    yield client
    client.close()


@pytest.fixture
def stream() -> str:
    return unique_name("relay")


def rows(stream: str, count: int) -> list[tuple[str, int]]:
    """``count`` rows spread over the keys: (key, n), n counting up per key."""
    return [(KEYS[n % len(KEYS)], n) for n in range(count)]


def expected_order(pairs: list[tuple[str, int]]) -> dict[str, list[int]]:
    order: dict[str, list[int]] = {}
    for key, n in pairs:
        order.setdefault(key, []).append(n)
    return order


def relay_of(outbox: SqlAlchemyOutbox, client: redis.Redis, **options: object) -> Relay:
    options.setdefault("listen", False)
    return Relay(outbox, RedisPublisher(client), **options)  # type: ignore[arg-type]


# -- the protocol ------------------------------------------------------------------------


def test_every_row_is_published_to_its_stream_in_order_and_marked_sent(
    engine: sa.Engine, client: redis.Redis, stream: str
) -> None:
    outbox = make_outbox(engine)
    pairs = rows(stream, 25)
    write(outbox, [message(stream, key, n) for key, n in pairs])

    stats = relay_of(outbox, client, batch_size=7).run_until_idle()

    assert pairs == read_stream(client, stream)
    assert (25, 4, 0) == (stats.sent, stats.batches, outbox.pending())


def test_an_entry_carries_the_wire_fields_of_the_message(
    engine: sa.Engine, client: redis.Redis, stream: str
) -> None:
    outbox = make_outbox(engine)
    sent = message(stream, "k", 1)
    write(outbox, [sent])

    relay_of(outbox, client).run_until_idle()

    [(_, fields)] = client.xrange(stream)
    assert sent.fields() == {k.decode(): v.decode() for k, v in fields.items()}


def test_messages_go_to_the_stream_their_destination_names(
    engine: sa.Engine, client: redis.Redis, stream: str
) -> None:
    outbox = make_outbox(engine)
    other = unique_name("relay")
    write(outbox, [message(stream, "k", 1), message(other, "k", 2), message(stream, "k", 3)])

    relay_of(outbox, client).run_until_idle()

    assert ([("k", 1), ("k", 3)], [("k", 2)]) == (
        read_stream(client, stream),
        read_stream(client, other),
    )


class Crash(BaseException):
    """The relay's process dies here (not an error it could handle)."""


class CrashingRelay(Relay):
    """A relay that dies at one step of one batch: before or after claim,
    publish or mark."""

    def __init__(self, *args: object, at: str, batch: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.at = at
        self.batch = batch
        self.batches = 0

    def _crash(self, point: str) -> None:
        if point == self.at and self.batches == self.batch:
            raise Crash(point)

    def claim(self) -> Claim:
        self.batches += 1
        self._crash("before claim")
        claim = super().claim()
        try:
            self._crash("after claim")
        except Crash:
            self.outbox.release(claim)  # the process's connections die with it
            raise
        return claim

    def publish(self, claim: Claim) -> Published:
        self._crash("before publish")
        published = super().publish(claim)
        self._crash("after publish")
        return published

    def mark(self, claim: Claim, published: Published) -> None:
        self._crash("before mark")
        super().mark(claim, published)
        self._crash("after mark")


CRASH_POINTS = [
    "before claim",
    "after claim",
    "before publish",
    "after publish",
    "before mark",
    "after mark",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_after_a_crash_at_any_step_a_new_relay_delivers_every_row_in_order_per_key(
    engine: sa.Engine, client: redis.Redis, stream: str, point: str
) -> None:
    outbox = make_outbox(engine)
    pairs = rows(stream, 40)
    write(outbox, [message(stream, key, n) for key, n in pairs])
    crashing = CrashingRelay(
        outbox, RedisPublisher(client), at=point, batch=2, batch_size=6, listen=False
    )

    with pytest.raises(Crash, match=point):
        crashing.run_until_idle()
    relay_of(outbox, client, batch_size=6).run_until_idle()  # the restart

    delivered = read_stream(client, stream)
    assert expected_order(pairs) == first_seen(delivered)
    assert 0 == outbox.pending()
    # At least once: only a crash between publish and mark sends a batch twice.
    copies = len(delivered) - len(pairs)
    assert (6 if point in ("after publish", "before mark") else 0) == copies


def test_a_crash_at_every_step_in_turn_loses_nothing_and_reorders_nothing(
    engine: sa.Engine, client: redis.Redis, stream: str
) -> None:
    outbox = make_outbox(engine)
    pairs = rows(stream, 100)
    write(outbox, [message(stream, key, n) for key, n in pairs])

    for point in CRASH_POINTS:  # each relay dies in its second batch
        relay = CrashingRelay(
            outbox, RedisPublisher(client), at=point, batch=2, batch_size=5, listen=False
        )
        with pytest.raises(Crash):
            relay.run_until_idle()
    relay_of(outbox, client, batch_size=5).run_until_idle()

    assert expected_order(pairs) == first_seen(read_stream(client, stream))
    assert 0 == outbox.pending()


def test_two_relays_on_postgresql_take_turns_per_key_never_interleaving_one(
    tmp_path: Path, postgres_database_factory: Callable[[], str], client: redis.Redis, stream: str
) -> None:
    engine = make_engine("postgresql", tmp_path, postgres_database_factory)
    outbox = make_outbox(engine)
    pairs = rows(stream, 40)  # keys a, b, c, d: ten rows each
    write(outbox, [message(stream, key, n) for key, n in pairs])
    first, second = relay_of(outbox, client, batch_size=2), relay_of(outbox, client, batch_size=2)
    held: list[tuple[set[str], set[str]]] = []

    while outbox.pending():  # both claim, then both publish, then both mark
        claims = [first.claim(), second.claim()]
        held.append(tuple({e.message.key for e in claim.entries} for claim in claims))  # type: ignore[arg-type]
        published = [
            relay.publish(claim) for relay, claim in zip((first, second), claims, strict=True)
        ]
        for relay, claim, result in zip((first, second), claims, published, strict=True):
            relay.mark(claim, result)

    assert expected_order(pairs) == expected_order(read_stream(client, stream))
    assert all(not (mine & theirs) for mine, theirs in held)
    assert all(mine and theirs for mine, theirs in held[:3])  # both at work
    engine.dispose()


def test_two_relays_on_postgresql_deliver_every_row_once_in_order_per_key(
    tmp_path: Path, postgres_database_factory: Callable[[], str], client: redis.Redis, stream: str
) -> None:
    engine = make_engine("postgresql", tmp_path, postgres_database_factory)
    outbox = make_outbox(engine)
    keys = [f"key-{k}" for k in range(200)]
    pairs = [(keys[n % len(keys)], n) for n in range(2000)]
    write(outbox, [message(stream, key, n) for key, n in pairs])
    relays = [relay_of(outbox, client, batch_size=50) for _ in range(2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(relay: Relay) -> None:
        start.wait()
        try:
            relay.run_until_idle()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A relay may find nothing takeable while the other holds every key left:
    # what remains is taken by one more pass.
    relay_of(outbox, client, batch_size=50).run_until_idle()

    delivered = read_stream(client, stream)
    assert [] == errors
    assert expected_order(pairs) == expected_order(delivered)  # each once, in order
    engine.dispose()


# -- the broker refuses, or is away ---------------------------------------------------------


def test_a_row_redis_refuses_is_tried_again_then_parked_and_its_key_goes_on(
    engine: sa.Engine, client: redis.Redis, stream: str
) -> None:
    outbox = make_outbox(engine, max_tries=2, retry_delay=lambda tries: 0.0)
    broken = unique_name("not-a-stream")
    client.set(broken, "a string: XADD to it is refused (WRONGTYPE)")
    write(outbox, [message(broken, "k", 1), message(stream, "k", 2)])
    relay = relay_of(outbox, client)

    relay.run_until_idle()

    [parked] = outbox.list_parked()
    assert (1, 2, True) == (parked.id, parked.tries, parked.parked)
    assert parked.last_error is not None
    assert "WRONGTYPE" in parked.last_error
    assert [("k", 2)] == read_stream(client, stream)
    assert (1, 2, 1) == (relay.stats.sent, relay.stats.failed, relay.stats.parked)


def test_a_parked_row_retried_after_the_cause_is_fixed_is_published(
    engine: sa.Engine, client: redis.Redis
) -> None:
    outbox = make_outbox(engine, max_tries=1)
    broken = unique_name("not-a-stream")
    client.set(broken, "a string")
    write(outbox, [message(broken, "k", 1)])
    relay = relay_of(outbox, client)
    relay.run_until_idle()

    client.delete(broken)
    assert 1 == outbox.retry_parked()
    relay.run_until_idle()

    assert [("k", 1)] == read_stream(client, broken)
    assert [] == outbox.list_parked()


def test_while_redis_is_down_the_rows_stay_pending_and_go_once_it_is_back(
    redis_server: RedisServer, tmp_path: Path, postgres_database_factory: Callable[[], str]
) -> None:
    engine = make_engine("sqlite", tmp_path, postgres_database_factory)
    outbox = make_outbox(engine)
    client = redis.Redis.from_url(redis_server.url)
    stream = unique_name("relay")
    write(outbox, [message(stream, "k", n) for n in range(5)])
    relay = relay_of(outbox, client)
    redis_server.stop()

    with pytest.raises(BrokerUnavailable, match="Redis"):
        relay.relay_batch()
    assert 5 == outbox.pending()

    redis_server.start()
    relay.run_until_idle()
    assert [("k", n) for n in range(5)] == read_stream(client, stream)
    client.close()
    engine.dispose()


def test_the_running_relay_backs_off_while_redis_is_down_then_goes_on(
    redis_server: RedisServer, tmp_path: Path, postgres_database_factory: Callable[[], str]
) -> None:
    engine = make_engine("sqlite", tmp_path, postgres_database_factory)
    outbox = make_outbox(engine)
    client = redis.Redis.from_url(redis_server.url)
    stream = unique_name("relay")
    write(outbox, [message(stream, "k", n) for n in range(3)])
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # Redis comes back during the fourth wait
        waits.append(seconds)
        if len(waits) == 4:
            redis_server.start()

    def stop_when_done(stats: object) -> None:
        relay.stop()

    import tenacity

    relay = relay_of(
        outbox,
        client,
        sleep=sleep,
        backoff=tenacity.wait_exponential(multiplier=1, max=5),
        on_batch=stop_when_done,
    )
    redis_server.stop()
    stats = relay.run()

    assert [1.0, 2.0, 4.0, 5.0] == waits  # doubling, capped
    assert [("k", n) for n in range(3)] == read_stream(client, stream)
    assert (3, 1) == (stats.sent, stats.outages)
    client.close()
    engine.dispose()


def test_redis_killed_and_restarted_between_batches_loses_no_row(
    redis_server: RedisServer, tmp_path: Path, postgres_database_factory: Callable[[], str]
) -> None:
    engine = make_engine("postgresql", tmp_path, postgres_database_factory)
    outbox = make_outbox(engine)
    client = redis.Redis.from_url(redis_server.url)
    stream = unique_name("relay")
    pairs = rows(stream, 30)
    write(outbox, [message(stream, key, n) for key, n in pairs])

    class KillingRelay(Relay):
        def mark(self, claim: Claim, published: Published) -> None:
            super().mark(claim, published)
            if self.stats.batches == 1:
                redis_server.restart(kill=True)  # what it acknowledged was written

    relay = KillingRelay(outbox, RedisPublisher(client), batch_size=10, listen=False)
    relay.run_until_idle()

    assert expected_order(pairs) == first_seen(read_stream(client, stream))
    client.close()
    engine.dispose()


# -- waking up ----------------------------------------------------------------------------


def run_in_thread(relay: Relay) -> threading.Thread:
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    return thread


def wait_for_entries(client: redis.Redis, stream: str, count: int) -> list[tuple[str, int]]:
    """Block (on Redis, not on a timer) until the stream has ``count`` entries.

    The bound only turns a hang into a failure: the relay polls once an hour
    here, so only a wake-up brings the entries.
    """
    last = "0-0"
    while len(read_stream(client, stream)) < count:
        found = client.xread({stream: last}, block=30_000)
        assert found, "no entry came: the relay was not woken"
        last = found[0][1][-1][0]
    return read_stream(client, stream)


def test_a_commit_in_this_process_wakes_the_relay_at_once(
    engine: sa.Engine, client: redis.Redis, stream: str
) -> None:
    outbox = make_outbox(engine)
    relay = relay_of(outbox, client, poll_interval=3600)
    thread = run_in_thread(relay)
    try:
        for n in range(3):
            uow = SqlAlchemyUnitOfWork(sessionmaker(engine), outbox_table=outbox.table)
            uow.stage_outgoing([message(stream, "k", n)])
            uow.commit()
            uow.close()
            assert [("k", i) for i in range(n + 1)] == wait_for_entries(client, stream, n + 1)
    finally:
        relay.stop()
        thread.join()


def test_a_commit_in_another_process_wakes_the_relay_by_notify_on_postgresql(
    tmp_path: Path, postgres_database_factory: Callable[[], str], client: redis.Redis, stream: str
) -> None:
    engine = make_engine("postgresql", tmp_path, postgres_database_factory)
    outbox = make_outbox(engine)
    relay = Relay(outbox, RedisPublisher(client), poll_interval=3600, listen=True)
    thread = run_in_thread(relay)
    try:
        wait_for_listener(engine)
        # Written outside a unit of work: no in-process wake-up, only the NOTIFY.
        write(outbox, [message(stream, "k", 1)])
        assert [("k", 1)] == wait_for_entries(client, stream, 1)
    finally:
        relay.stop()
        thread.join()
    engine.dispose()


def test_stop_ends_a_running_relay(engine: sa.Engine, client: redis.Redis) -> None:
    relay = relay_of(make_outbox(engine), client, poll_interval=3600)
    thread = run_in_thread(relay)

    relay.stop()
    thread.join()

    assert not thread.is_alive()


def test_the_relay_deletes_rows_sent_before_the_retention_period(
    engine: sa.Engine, client: redis.Redis, stream: str
) -> None:
    import datetime as dt

    outbox = make_outbox(engine)
    write(outbox, [message(stream, "k", n) for n in range(3)])
    relay_of(outbox, client).run_until_idle()

    relay = relay_of(outbox, client, retention=dt.timedelta(0), poll_interval=3600)
    thread = run_in_thread(relay)
    relay.stop()
    thread.join()

    assert 3 == relay.stats.deleted
    with engine.connect() as connection:
        assert (
            0 == connection.execute(sa.select(sa.func.count()).select_from(outbox.table)).scalar()
        )


def test_a_full_batch_is_followed_by_the_next_at_once_and_cleanup_may_be_off(
    engine: sa.Engine, client: redis.Redis, stream: str
) -> None:
    outbox = make_outbox(engine)
    write(outbox, [message(stream, "k", n) for n in range(3)])

    def stop_when_done(stats: RelayStats) -> None:
        if stats.sent == 3:
            relay.stop()

    relay = relay_of(
        outbox,
        client,
        batch_size=1,
        poll_interval=3600,  # a batch that was full is not followed by a wait
        retention=None,
        cleanup_interval=0,
        on_batch=stop_when_done,
    )
    stats = relay.run()

    assert (3, 3, 0) == (stats.sent, stats.batches, stats.deleted)
    assert [("k", n) for n in range(3)] == read_stream(client, stream)


def test_a_claim_on_a_missing_table_raises_and_holds_no_connection(
    engine: sa.Engine,
) -> None:
    outbox = SqlAlchemyOutbox(engine)  # its table was never created

    with pytest.raises(
        sa.exc.ProgrammingError if engine.dialect.name == "postgresql" else sa.exc.OperationalError
    ):
        outbox.claim(10)
    assert 0 == engine.pool.checkedout()  # type: ignore[attr-defined]


def test_the_publisher_says_when_redis_cannot_be_reached(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    publisher = RedisPublisher(client)
    redis_server.stop()

    with pytest.raises(BrokerUnavailable, match="Redis"):
        publisher.version()
    assert "maxlen=None" in repr(publisher)
    client.close()


def test_while_the_database_is_locked_the_relay_waits_then_goes_on(
    tmp_path: Path, client: redis.Redis, stream: str
) -> None:
    path = tmp_path / "outbox.db"
    # No busy timeout: a locked database fails at once (OperationalError, transient).
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    outbox = make_outbox(engine)
    write(outbox, [message(stream, "k", n) for n in range(2)])
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        locker.execute("COMMIT")  # and lets it go during the first wait

    def stop_when_done(stats: RelayStats) -> None:
        relay.stop()

    relay = relay_of(outbox, client, sleep=sleep, on_batch=stop_when_done, retention=None)
    stats = relay.run()

    assert 1 == len(waits)
    assert (2, 1) == (stats.sent, stats.outages)
    assert [("k", 0), ("k", 1)] == read_stream(client, stream)
    locker.close()
    engine.dispose()


def test_an_error_of_the_database_that_is_not_transient_stops_the_relay(
    tmp_path: Path, postgres_database_factory: Callable[[], str], client: redis.Redis
) -> None:
    engine = make_engine("postgresql", tmp_path, postgres_database_factory)
    relay = relay_of(SqlAlchemyOutbox(engine), client, retention=None)  # no table

    with pytest.raises(sa.exc.ProgrammingError, match="messagebus_outbox"):
        relay.run()
    engine.dispose()
