"""Consumer overhead against the same handler without it: ``python bench/bench_consumer.py``.

A standalone script (not a timed test). The handler inserts a row in its
unit of work's transaction. The floor: ``bus.handle(message, metadata=...)``
for ``--events`` messages (20,000 by default), each handling its own
transaction, and nothing else. The consumer: the same messages as Redis
stream entries (added beforehand, untimed), read in a consumer group,
checked and loaded by the serializer, handled by the same handler that also
claims the message in the inbox table (one more row in its transaction), and
acknowledged (``XACK``). Best of ``--repeat`` runs each. The figure of merit is
the overhead, consumer time / floor time - 1: the target is at most 25%.

Databases: SQLite in a temporary file (WAL, ``synchronous=NORMAL``: as a
service would run it) and PostgreSQL (``DATABASE_URL``, or a server of its
own from the machine's binaries, as the tests do). Redis: ``REDIS_URL``, or a
``redis-server`` of its own on a free loopback port. What cannot be had is
reported as skipped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the tests' server helpers and consumer application

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import structlog  # noqa: E402
from tests.integration import consumer_app as app  # noqa: E402

from bench.bench_relay import _postgres_url, _redis_url, _wal  # noqa: E402
from messagebus import Metadata, Serializer  # noqa: E402
from messagebus.consumer import Consumer  # noqa: E402
from messagebus.observe import InMemoryDeadLetters  # noqa: E402
from messagebus.redis import RedisStreamReader  # noqa: E402

TARGET = 0.25


def _fresh(engine: sa.Engine) -> None:
    """Empty tables, as each run starts."""
    app.Base.metadata.drop_all(engine)
    app.Base.metadata.create_all(engine)


def _floor(engine: sa.Engine, messages: list[tuple[Any, Metadata]]) -> float:
    """Seconds the handler takes, called through the bus, without a consumer or an inbox."""
    _fresh(engine)
    bus = app.build(engine, dead_letters=InMemoryDeadLetters(), claim=False)
    started = time.perf_counter()
    for message, metadata in messages:
        bus.handle(message, metadata=metadata)
    elapsed = time.perf_counter() - started
    if app.count_handled(engine) != len(messages):
        raise RuntimeError("the floor did not handle every message")
    return elapsed


def _consumer(
    engine: sa.Engine, client: redis.Redis, messages: list[tuple[Any, Metadata]], batch: int
) -> float:
    """Seconds a consumer takes to read, load, handle (with the inbox claim) and acknowledge."""
    _fresh(engine)
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    serializer = Serializer([app.Reserve])
    with client.pipeline(transaction=False) as pipe:
        for message, metadata in messages:
            pipe.xadd(stream, app.fields(message, metadata, serializer))  # type: ignore[arg-type]
        pipe.execute()
    reader = RedisStreamReader(client, group="bench", streams=[stream], batch=batch, block=0.01)
    reader.setup()
    consumer = Consumer(app.build(engine, dead_letters=InMemoryDeadLetters()), reader)
    started = time.perf_counter()
    consumer.drain()
    elapsed = time.perf_counter() - started
    client.delete(stream)
    if consumer.summary.handled != len(messages) or app.count_handled(engine) != len(messages):
        raise RuntimeError(f"the consumer handled {consumer.summary.handled} of {len(messages)}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100, help="the consumer's cap in flight")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    # The bus's own logging off: it would be the same on both sides, and dominate.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))

    messages = [(app.Reserve(f"o{n}"), Metadata.new()) for n in range(args.events)]
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
                floor = min(_floor(engine, messages) for _ in range(args.repeat))
                consumed = min(
                    _consumer(engine, client, messages, args.batch) for _ in range(args.repeat)
                )
                app.Base.metadata.drop_all(engine)
                engine.dispose()
                rows.append((label, args.events / consumed, args.events / floor))
        client.close()

    print(f"consumer overhead, {args.events} events, {args.batch} in flight:")
    print(f"{'database':<12} {'consumer ev/s':>14} {'handler ev/s':>13} {'overhead':>9}  target")
    for label, consumer_rate, floor_rate in rows:
        overhead = floor_rate / consumer_rate - 1
        verdict = "PASS" if overhead <= TARGET else "FAIL"
        print(
            f"{label:<12} {consumer_rate:>14,.0f} {floor_rate:>13,.0f} {overhead:>8.0%}"
            f"  <= {TARGET:.0%} {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
