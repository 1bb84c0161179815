"""The consumer on a real Redis: handled through the bus, acknowledged after commit,
bad entries as dead letters, duplicates handled once, and every protocol step a
crash point followed by a restart."""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy

from messagebus import Metadata
from messagebus.consumer import BadEntryError, Consumer, StreamEntry
from messagebus.observe import DeadLetter, InMemoryDeadLetters
from messagebus.redis import RedisStreamReader
from messagebus.sqlalchemy import SqlAlchemyUnitOfWork
from tests.servers import RedisServer, unique_name

from . import consumer_app as app
from .consumer_app import Reserve, Reserved

pytestmark = pytest.mark.integration


class Crash(BaseException):
    """The process dies here: nothing after this point runs (not an Exception)."""


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sqlalchemy.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'consumer.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_database")
    engine = app.make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def stream() -> str:
    return unique_name("orders")


@pytest.fixture
def letters() -> InMemoryDeadLetters:
    return InMemoryDeadLetters()


@pytest.fixture(autouse=True)
def no_failing_orders() -> Iterator[None]:
    yield
    app.FAILING.clear()


def reader(client: redis.Redis, stream: str, name: str = "c1", **options: Any) -> RedisStreamReader:
    options.setdefault("claim_idle", 0)
    options.setdefault("block", 0.01)
    reader = RedisStreamReader(
        client, group="reservations", streams=[stream], consumer=name, **options
    )
    reader.setup()
    return reader


def publish(client: redis.Redis, stream: str, *orders: str) -> list[Metadata]:
    sent = []
    for order in orders:
        metadata = Metadata.new()
        client.xadd(stream, app.fields(Reserve(order), metadata))
        sent.append(metadata)
    return sent


def pending(client: redis.Redis, stream: str) -> int:
    return int(client.xpending(stream, "reservations")["pending"])


def drain(consumer: Consumer) -> None:
    while consumer.drain():
        pass


# -- handling -----------------------------------------------------------------------------


def test_messages_are_handled_in_stream_order_with_their_metadata_and_acknowledged(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str, letters: InMemoryDeadLetters
) -> None:
    sent = publish(client, stream, "o1", "o2", "o3")
    seen: list[Metadata] = []
    bus = app.build(engine, dead_letters=letters)
    consumer = Consumer(bus, reader(client, stream, batch=2))
    consumer.handle = lambda message, metadata: (
        seen.append(metadata),
        Consumer.handle(consumer, message, metadata),
    )  # type: ignore[method-assign]

    drain(consumer)

    assert ["o1", "o2", "o3"] == app.handled(engine)
    assert sent == seen
    assert (0, [], 3, 3) == (
        pending(client, stream),
        letters.letters,
        consumer.summary.handled,
        consumer.summary.read,
    )


def test_an_event_is_handled_by_its_handlers_and_acknowledged(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str, letters: InMemoryDeadLetters
) -> None:
    client.xadd(stream, app.fields(Reserved("o1")))
    consumer = Consumer(app.build(engine, dead_letters=letters), reader(client, stream))

    drain(consumer)

    assert (["o1"], 0) == (app.handled(engine, "note"), pending(client, stream))


def test_the_same_entry_delivered_twice_is_handled_once(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str, letters: InMemoryDeadLetters
) -> None:
    entry = app.fields(Reserve("o1"))
    client.xadd(stream, entry)
    client.xadd(stream, entry)  # re-added by hand: a second delivery of the same message
    consumer = Consumer(app.build(engine, dead_letters=letters), reader(client, stream))

    drain(consumer)

    assert (["o1"], 0, 2) == (
        app.handled(engine),
        pending(client, stream),
        consumer.summary.handled,
    )


def test_the_same_entry_delivered_twice_is_handled_once_by_a_handler_that_does_not_claim_it(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str, letters: InMemoryDeadLetters
) -> None:
    entry = app.fields(Reserve("o1"))
    client.xadd(stream, entry)
    client.xadd(stream, entry)
    consumer = Consumer(
        app.build(engine, dead_letters=letters, claim=False), reader(client, stream)
    )

    drain(consumer)

    assert ["o1"] == app.handled(engine)


def test_a_consumer_needs_a_dead_letter_store(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str
) -> None:
    with pytest.raises(Exception, match="a consumer needs a dead-letter store"):
        Consumer(app.build(engine), reader(client, stream))


# -- bad input ------------------------------------------------------------------------------


def bad_entries() -> list[tuple[str, dict[bytes, bytes], str]]:
    good = {key.encode(): value.encode() for key, value in app.fields(Reserve("o1")).items()}
    return [
        ("garbage", {b"\xff\xfe": b"\x00\x81garbage"}, "missing field(s): id, name, version"),
        ("unknown name", {**good, b"name": b"os.system"}, "unknown message name 'os.system'"),
        (
            "wrong version",
            {**good, b"version": b"1"},
            "version 1 is not the registered version 2",
        ),
        ("not a version", {**good, b"version": b"-1"}, "field 'version' is not a positive integer"),
        ("payload not JSON", {**good, b"payload": b"{oops"}, "field 'payload' is not JSON"),
        ("payload of the wrong shape", {**good, b"payload": b'{"order": 5}'}, "expected a str"),
        (
            "metadata not metadata",
            {**good, b"metadata": b'{"a": 1}'},
            "is not a message's metadata",
        ),
        (
            "id not the metadata's",
            {**good, b"id": b"other"},
            "field 'id' ('other') is not the metadata's",
        ),
        ("not UTF-8", {**good, b"name": b"\xff"}, "field 'name' is not UTF-8 text"),
    ]


@pytest.mark.parametrize(
    ("case", "fields", "reason"), bad_entries(), ids=[c[0] for c in bad_entries()]
)
def test_a_bad_entry_is_a_dead_letter_with_its_raw_data_and_the_consumer_goes_on(
    engine: sqlalchemy.Engine,
    client: redis.Redis,
    stream: str,
    letters: InMemoryDeadLetters,
    case: str,
    fields: dict[bytes, bytes],
    reason: str,
) -> None:
    bad_id = client.xadd(stream, fields).decode()
    publish(client, stream, "o2")
    consumer = Consumer(app.build(engine, dead_letters=letters), reader(client, stream))

    drain(consumer)

    assert ["o2"] == app.handled(engine)
    assert 0 == pending(client, stream)
    [letter] = letters.letters
    assert reason in letter.error
    assert letter.error.startswith(f"BadEntryError: entry {bad_id} of stream {stream!r}: ")
    assert ("messagebus.consumer:reservations", 1) == (letter.handler, letter.attempts)
    kept = letter.payload if "fields" in letter.payload else None
    if kept is not None:  # garbage: the entry itself is kept, nothing of it lost
        assert (stream, bad_id) == (kept["stream"], kept["entry_id"])
        recovered = {k.encode(): v.encode() for k, v in kept["fields"].items()}
        for key, value in kept.get("fields_base64", {}).items():
            import base64

            recovered[base64.b64decode(key)] = base64.b64decode(value)
        assert fields == recovered
    else:  # a message's payload and metadata, as they came
        import json

        assert json.loads(fields[b"payload"]) == letter.payload
        assert json.loads(fields[b"metadata"]) == letter.metadata


def test_parse_entry_names_what_is_wrong() -> None:
    bus = app.build(sqlalchemy.create_engine("sqlite://"), dead_letters=InMemoryDeadLetters())
    entry = StreamEntry("s", "1-0", {"a": "b"}, 1)
    consumer = Consumer(bus, _NoReader())

    with pytest.raises(
        BadEntryError, match=r"^entry 1-0 of stream 's': missing field\(s\)"
    ) as caught:
        consumer.parse(entry)

    assert (entry, "missing field(s): id, name, version, payload, metadata, key") == (
        caught.value.entry,
        caught.value.reason,
    )


class _NoReader:
    group = "g"
    consumer = "c"
    streams = ("s",)

    def read(self) -> list[StreamEntry]:
        return []

    def ack(self, entries: Sequence[StreamEntry]) -> None:
        raise AssertionError("nothing to acknowledge")


# -- failures and redeliveries -----------------------------------------------------------


def test_a_failed_handling_is_left_pending_and_is_a_dead_letter_on_its_last_delivery(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str, letters: InMemoryDeadLetters
) -> None:
    app.FAILING.add("o1")
    [metadata] = publish(client, stream, "o1")
    publish(client, stream, "o2")
    now = _dt.datetime(2024, 5, 1, tzinfo=_dt.timezone.utc)
    consumer = Consumer(
        app.build(engine, dead_letters=letters),
        reader(client, stream, batch=1),
        max_deliveries=3,
        now=lambda: now,
    )

    consumer.run_once()  # o1 fails: left pending
    assert (1, 1, []) == (pending(client, stream), consumer.summary.failed, letters.letters)
    drain(consumer)  # o1 reclaimed (claim_idle=0) until its third delivery; o2 handled

    assert (["o2"], 0) == (app.handled(engine), pending(client, stream))
    [letter] = letters.letters
    assert (
        "consumer_test.Reserve", 2, {"order": "o1"}, str(metadata.message_id), 3, now,
        "Fail: cannot reserve o1",
    ) == (
        letter.message_name, letter.message_version, letter.payload,
        letter.metadata["message_id"], letter.attempts, letter.failed_at, letter.error,
    )  # fmt: skip
    assert "cannot reserve o1" in letter.traceback
    assert (3, 1, 1) == (
        consumer.summary.failed, consumer.summary.handled, consumer.summary.dead_lettered
    )  # fmt: skip


def test_an_entry_that_stopped_the_consumer_too_often_is_a_dead_letter_without_handling(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str, letters: InMemoryDeadLetters
) -> None:
    publish(client, stream, "o1")
    bus = app.build(engine, dead_letters=letters)
    for attempt in range(2):
        crashing = Consumer(bus, reader(client, stream, name=f"c{attempt}"), max_deliveries=2)
        crashing.handle = _crash  # type: ignore[method-assign]
        with pytest.raises(Crash):
            crashing.run_once()

    last = Consumer(bus, reader(client, stream, name="c9"), max_deliveries=2)
    drain(last)

    assert ([], 0) == (app.handled(engine), pending(client, stream))
    [letter] = letters.letters
    assert 3 == letter.attempts
    assert "delivered 3 times without being acknowledged (max_deliveries=2)" in letter.error
    assert {"order": "o1"} == letter.payload


def _crash(*args: object) -> None:
    raise Crash


def test_an_entry_whose_dead_letter_cannot_be_stored_is_left_pending(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str
) -> None:
    class Broken:
        def add(self, letter: DeadLetter) -> None:
            raise OSError("the store is down")

    client.xadd(stream, {"garbage": "1"})
    consumer = Consumer(app.build(engine, dead_letters=Broken()), reader(client, stream))

    consumer.run_once()

    assert (1, 0) == (pending(client, stream), consumer.summary.dead_lettered)


# -- crash points -------------------------------------------------------------------------------


class CrashingUnitOfWork(SqlAlchemyUnitOfWork):
    """Dies right after its transaction committed, when armed."""

    armed: threading.Event = threading.Event()

    def _commit(self) -> None:
        super()._commit()
        if CrashingUnitOfWork.armed.is_set():
            CrashingUnitOfWork.armed.clear()
            raise Crash


class CrashingConsumer(Consumer):
    """Dies at one step, on the third message it handles."""

    def __init__(self, *args: Any, crash_at: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_at = crash_at
        self.seen = 0

    def read(self) -> list[StreamEntry]:
        entries = super().read()
        if self.crash_at in ("read", "reclaim") and entries:
            raise Crash
        return entries

    def parse(self, entry: StreamEntry) -> Any:
        self.seen += 1
        if self.crash_at == "parse" and self.seen == 3:
            raise Crash
        return super().parse(entry)

    def handle(self, message: Any, metadata: Metadata) -> None:
        if self.crash_at == "handle" and self.seen == 3:
            raise Crash
        if self.crash_at == "commit" and self.seen == 3:
            CrashingUnitOfWork.armed.set()
        super().handle(message, metadata)

    def ack(self, entries: Sequence[StreamEntry]) -> None:
        if self.crash_at == "ack" and self.seen >= 3:  # the batch of the third
            raise Crash
        super().ack(entries)


@pytest.mark.parametrize("restart", ["same consumer", "another consumer"])
@pytest.mark.parametrize("crash_at", ["read", "parse", "handle", "commit", "ack", "reclaim"])
def test_after_a_crash_at_any_step_and_a_restart_every_message_is_handled_once_in_order(
    engine: sqlalchemy.Engine,
    client: redis.Redis,
    stream: str,
    letters: InMemoryDeadLetters,
    crash_at: str,
    restart: str,
) -> None:
    orders = [f"o{number}" for number in range(1, 8)]
    publish(client, stream, *orders)
    bus = app.build(engine, dead_letters=letters, uow_class=CrashingUnitOfWork)
    if crash_at == "reclaim":
        # A first consumer dies with entries pending; the one that reclaims them dies too.
        with pytest.raises(Crash):
            CrashingConsumer(bus, reader(client, stream, "c0", batch=4), crash_at="read").run_once()
        first = CrashingConsumer(bus, reader(client, stream, "c1", batch=4), crash_at="reclaim")
    else:
        first = CrashingConsumer(bus, reader(client, stream, "c1", batch=4), crash_at=crash_at)

    with pytest.raises(Crash):
        drain(first)
    name = "c1" if restart == "same consumer" else "c2"
    drain(Consumer(bus, reader(client, stream, name, batch=4)))

    assert orders == app.handled(engine)
    assert (0, []) == (pending(client, stream), letters.letters)


# -- stopping --------------------------------------------------------------------------------


def test_stop_finishes_the_batch_in_hand_and_returns_the_summary(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str, letters: InMemoryDeadLetters
) -> None:
    publish(client, stream, "o1", "o2", "o3")
    consumer = Consumer(app.build(engine, dead_letters=letters), reader(client, stream, batch=3))
    stop_after_first = consumer.handle

    def handle(message: Any, metadata: Metadata) -> None:
        stop_after_first(message, metadata)
        consumer.stop()  # asked while the batch is in hand

    consumer.handle = handle  # type: ignore[method-assign]
    summary = consumer.run()

    assert (["o1", "o2", "o3"], 0, 3) == (
        app.handled(engine),
        pending(client, stream),
        summary.handled,
    )


def test_bad_reader_settings_are_refused_by_name(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="batch must be at least 1, not 0"):
        RedisStreamReader(client, group="g", streams=["s"], batch=0)
    with pytest.raises(ValueError, match="give at least one stream"):
        RedisStreamReader(client, group="g", streams=[])
    with pytest.raises(ValueError, match="must not be negative"):
        RedisStreamReader(client, group="g", streams=["s"], claim_idle=-1)


def test_a_payload_with_a_field_the_message_does_not_have_is_a_bad_entry(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str, letters: InMemoryDeadLetters
) -> None:
    good = app.fields(Reserve("o1"))
    client.xadd(stream, {**good, "payload": '{"order": "o1", "extra": 1}'})
    consumer = Consumer(app.build(engine, dead_letters=letters), reader(client, stream))

    drain(consumer)

    [letter] = letters.letters
    assert "invalid data for message 'consumer_test.Reserve'" in letter.error
    assert "extra" in letter.error


def test_sigterm_stops_the_consumer_after_the_batch_in_hand_and_restores_the_handler(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str, letters: InMemoryDeadLetters
) -> None:
    import os
    import signal

    publish(client, stream, "o1", "o2")
    consumer = Consumer(app.build(engine, dead_letters=letters), reader(client, stream, batch=2))
    handle = consumer.handle
    before = signal.getsignal(signal.SIGTERM)

    def handle_then_signal(message: Any, metadata: Metadata) -> None:
        handle(message, metadata)
        os.kill(os.getpid(), signal.SIGTERM)

    consumer.handle = handle_then_signal  # type: ignore[method-assign]
    summary = consumer.run(handle_signals=True)

    assert (["o1", "o2"], 0, 2) == (app.handled(engine), pending(client, stream), summary.handled)
    assert before == signal.getsignal(signal.SIGTERM)


def test_while_redis_is_down_the_consumer_waits_longer_each_time_and_goes_on_when_it_is_back(
    engine: sqlalchemy.Engine, redis_server: RedisServer, letters: InMemoryDeadLetters
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    stream = unique_name("orders")
    publish(client, stream, "o1", "o2", "o3")
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the outage lasts three waits
        waits.append(seconds)
        if len(waits) == 3:
            redis_server.start()

    consumer = Consumer(
        app.build(engine, dead_letters=letters),
        reader(client, stream, batch=1),
        sleep=sleep,
        backoff=(0.5, 1.5),
    )
    handle = consumer.handle

    def handle_and_crash_redis_after_the_first(message: Any, metadata: Metadata) -> None:
        handle(message, metadata)
        if message == Reserve("o1") and not waits:
            redis_server.kill()  # before o1 is acknowledged
        if message == Reserve("o3"):
            consumer.stop()

    consumer.handle = handle_and_crash_redis_after_the_first  # type: ignore[method-assign]
    summary = consumer.run()

    assert [0.5, 1.0, 1.5] == waits
    assert ["o1", "o2", "o3"] == app.handled(engine)  # o1 came back, and was not handled again
    assert (0, 3) == (pending(client, stream), summary.handled)
    client.close()


def test_after_a_crash_between_commit_and_ack_a_handler_that_does_not_claim_is_not_run_again(
    engine: sqlalchemy.Engine, client: redis.Redis, stream: str, letters: InMemoryDeadLetters
) -> None:
    publish(client, stream, "o1", "o2")
    bus = app.build(engine, dead_letters=letters, claim=False)
    first = CrashingConsumer(bus, reader(client, stream, "c1"), crash_at="ack")
    first.seen = 1  # dies before acknowledging the second message, handled and committed

    with pytest.raises(Crash):
        drain(first)
    drain(Consumer(bus, reader(client, stream, "c2")))

    assert ["o1", "o2"] == app.handled(engine)
