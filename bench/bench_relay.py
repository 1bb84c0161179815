"""Relay throughput against redis-py alone: ``python bench/bench_relay.py``.

A standalone script (not a timed test). It writes ``--events`` rows (20,000
by default) to an outbox table, then times a :class:`messagebus.relay.Relay`
publishing them to a Redis stream (claim, pipelined ``XADD``, mark sent, in
batches of ``--batch-size``), best of ``--repeat`` runs; and, as the floor,
redis-py alone adding the very same entries with the same pipelined ``XADD``
batches and nothing else. The ratio relay / floor is the figure of merit:
the target is at least 0.5 (the relay at least half as fast as Redis's own
client with nothing to read or mark).

Databases: SQLite in a temporary file (in WAL mode, ``synchronous=NORMAL``:
as a service would run it), and PostgreSQL (``DATABASE_URL``, or a
server of its own started from the machine's binaries, as the tests do).
Redis: ``REDIS_URL``, or a ``redis-server`` of its own on a free loopback port.
A database that cannot be had is reported as skipped.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.servers: the test run's own server helpers

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from messagebus.redis import RedisPublisher  # noqa: E402
from messagebus.relay import Relay  # noqa: E402
from messagebus.sqlalchemy import SqlAlchemyOutbox, outbox_table  # noqa: E402
from messagebus.sqlalchemy._outbox import stage_statements  # noqa: E402
from messagebus.transport import OutgoingMessage  # noqa: E402

TARGET = 0.5


def _messages(stream: str, count: int) -> list[OutgoingMessage]:
    """Allocated events of the example's size, over 100 partition keys."""
    return [
        OutgoingMessage(
            message_id=str(uuid.uuid4()),
            name="Allocated",
            version=1,
            payload=json.dumps(
                {"orderid": f"order-{n}", "sku": f"SKU-{n % 100}", "qty": 3, "batchref": "b-1"}
            ),
            metadata=json.dumps(
                {
                    "message_id": str(uuid.uuid4()),
                    "correlation_id": str(uuid.uuid4()),
                    "causation_id": str(uuid.uuid4()),
                    "created_at": "2026-01-01T12:00:00.000000Z",
                }
            ),
            destination=stream,
            key=f"SKU-{n % 100}",
        )
        for n in range(count)
    ]


def _floor(client: redis.Redis, messages: list[OutgoingMessage], batch_size: int) -> float:
    """Seconds redis-py alone takes to add the entries, pipelined in batches."""
    started = time.perf_counter()
    for start in range(0, len(messages), batch_size):
        with client.pipeline(transaction=False) as pipe:
            for message in messages[start : start + batch_size]:
                pipe.xadd(message.destination, message.fields())  # type: ignore[arg-type]
            pipe.execute()
    return time.perf_counter() - started


def _relay(
    engine: sa.Engine, client: redis.Redis, messages: list[OutgoingMessage], batch_size: int
) -> float:
    """Seconds a relay takes to publish and mark the rows (written beforehand, untimed)."""
    table = outbox_table(sa.MetaData(), name=f"outbox_{uuid.uuid4().hex[:8]}")
    outbox = SqlAlchemyOutbox(engine, table=table)
    outbox.create_table()
    with engine.begin() as connection:
        for statement, parameters in stage_statements(engine.dialect.name, table, messages):
            connection.execute(statement, parameters)
        if engine.dialect.name == "postgresql":
            # Statistics, as autovacuum keeps them on a live table: without them the
            # planner takes a brand-new table for an empty one, and sorts every
            # pending row instead of reading the oldest through the index.
            connection.execute(sa.text(f'ANALYZE "{table.name}"'))
    relay = Relay(outbox, RedisPublisher(client), batch_size=batch_size, listen=False)
    started = time.perf_counter()
    stats = relay.run_until_idle()
    elapsed = time.perf_counter() - started
    if stats.sent != len(messages):
        raise RuntimeError(f"the relay sent {stats.sent} of {len(messages)}")
    table.drop(engine)
    return elapsed


@contextmanager
def _redis_url() -> Iterator[str | None]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from tests.servers import RedisServer, RedisUnavailable

    try:
        server = RedisServer()
        server.start()
    except (RedisUnavailable, OSError) as exc:
        print(f"relay throughput: skipped, no Redis ({exc})", file=sys.stderr)
        yield None
        return
    try:
        yield server.url
    finally:
        server.remove()


@contextmanager
def _postgres_url() -> Iterator[str | None]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    try:
        from tests.conftest import PostgresServer

        server = PostgresServer()
        server.start()
    except Exception as exc:  # no binaries, no 'postgres' user: reported, not fatal
        print(f"PostgreSQL: skipped ({exc})", file=sys.stderr)
        yield None
        return
    try:
        yield server.url
    finally:
        server.remove()


def _wal(connection: Any, record: object) -> None:
    """SQLite as a service runs it: write-ahead log, fsync at checkpoints only."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def _best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    rows = []
    with _redis_url() as redis_url, _postgres_url() as postgres_url:
        if redis_url is None:
            return 0
        client = redis.Redis.from_url(redis_url)
        with tempfile.TemporaryDirectory() as folder:
            databases = {"SQLite": f"sqlite:///{Path(folder) / 'bench.db'}"}
            if postgres_url is not None:
                databases["PostgreSQL"] = postgres_url
            for label, url in databases.items():
                engine = sa.create_engine(url)
                if label == "SQLite":
                    sa.event.listen(engine, "connect", _wal)
                stream = f"bench-{uuid.uuid4().hex[:8]}"
                messages = _messages(stream, args.events)
                floor = _best(
                    args.repeat, functools.partial(_floor, client, messages, args.batch_size)
                )
                relayed = _best(
                    args.repeat,
                    functools.partial(_relay, engine, client, messages, args.batch_size),
                )
                client.delete(stream)
                engine.dispose()
                rows.append((label, args.events / relayed, args.events / floor))
        client.close()

    print(f"relay throughput, {args.events} events, batches of {args.batch_size}:")
    print(f"{'database':<12} {'relay ev/s':>12} {'redis-py ev/s':>14} {'ratio':>7}  target")
    for label, relay_rate, floor_rate in rows:
        ratio = relay_rate / floor_rate
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        print(
            f"{label:<12} {relay_rate:>12,.0f} {floor_rate:>14,.0f} {ratio:>6.2f}x"
            f"  >= {TARGET}x {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
