"""Relay processes killed with SIGKILL at random instants, on PostgreSQL and Redis.

The crash-point tests stop a relay between its steps; this is the real thing:
two ``messagebus relay`` processes publish rows that the test keeps writing,
and are killed (``SIGKILL``: no clean-up of any kind) and started again at
random instants; Redis itself is killed and restarted once, halfway.
Afterwards every row has reached the stream, and each key's rows came in the
order they were written (copies aside: at least once).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tests.servers import RedisServer, unique_name

from ._relay_helpers import first_seen, make_outbox, message, write

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 3000
KEYS = 30
KILLS = 20


class Relays:
    """Relay processes of the command line, started and killed by the test."""

    def __init__(self, database: str, redis_url: str, table: str) -> None:
        self.command = [
            sys.executable,
            "-m",
            "messagebus.cli",
            "relay",
            "--db",
            database,
            "--redis",
            redis_url,
            "--table",
            table,
            "--batch-size",
            "40",
            "--poll-interval",
            "0.2",
            "--quiet",
        ]
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            self.command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.stderr is not None
        process.stderr.close()

    def stop_all(self) -> list[int]:
        codes = []
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                codes.append(process.wait(timeout=60))
            if process.stderr is not None and not process.stderr.closed:
                process.stderr.close()
        return codes


@pytest.fixture
def relays_factory() -> Iterator[Callable[[str, str, str], Relays]]:
    made: list[Relays] = []

    def make(database: str, redis_url: str, table: str) -> Relays:
        relays = Relays(database, redis_url, table)
        made.append(relays)
        return relays

    yield make
    for relays in made:  # a failed test leaves no process behind
        for process in relays.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def entries(client: redis.Redis, stream: str) -> list[tuple[str, int]]:
    return [
        (fields[b"key"].decode(), json.loads(fields[b"payload"])["n"])
        for _, fields in client.xrange(stream)
    ]


def test_relays_killed_at_random_instants_deliver_every_row_in_order_per_key(
    postgres_database_factory: Callable[[], str],
    redis_server: RedisServer,
    relays_factory: Callable[[str, str, str], Relays],
) -> None:
    database = postgres_database_factory()
    engine = sa.create_engine(database)
    outbox = make_outbox(engine)
    redis_url = redis_server.url
    # Reconnects by itself after Redis restarted (a few tries, a little apart).
    client = redis.Redis.from_url(
        redis_url,
        retry=Retry(ExponentialBackoff(cap=1.0), 10),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    stream = unique_name("killed")
    rng = random.Random(20261202)
    relays = relays_factory(database, redis_url, outbox.table.name)
    running = [relays.start(), relays.start()]
    pairs = [(f"key-{n % KEYS}", n) for n in range(EVENTS)]
    chunks = [pairs[start : start + 100] for start in range(0, EVENTS, 100)]
    kill_after = set(rng.sample(range(len(chunks)), KILLS - 5))

    for number, chunk in enumerate(chunks):
        write(outbox, [message(stream, key, n) for key, n in chunk])
        if number == len(chunks) // 2:
            redis_server.restart(kill=True)  # it keeps what it acknowledged (fsync always)
        if number in kill_after:
            victim = running.pop(rng.randrange(len(running)))
            # An instant while the relays are at work on what was just written.
            client.xread({stream: "$"}, block=rng.randint(1, 40))
            relays.kill(victim)
            running.append(relays.start())
    for _ in range(5):  # and while they work through what is left
        client.xread({stream: "$"}, block=rng.randint(1, 40))
        victim = running.pop(rng.randrange(len(running)))
        relays.kill(victim)
        running.append(relays.start())

    # Block on Redis until every row has come at least once; the bound turns a
    # hang into a failure.
    last, quiet = "0-0", 0
    while len({n for _, n in entries(client, stream)}) < EVENTS:
        found = client.xread({stream: last}, block=2000)  # under the client's 5 s timeout
        quiet = 0 if found else quiet + 1
        assert quiet < 30, f"rows stopped coming: {outbox.pending()} still pending"
        if found:
            last = found[0][1][-1][0]
    # A row a killed relay published but did not mark is pending until a live
    # relay publishes it again: wait for that too (bounded, as above).
    for _ in range(600):
        if outbox.pending() == 0:
            break
        client.xread({stream: "$"}, block=100)
    codes = relays.stop_all()

    expected: dict[str, list[int]] = {}
    for key, n in pairs:
        expected.setdefault(key, []).append(n)
    assert expected == first_seen(entries(client, stream))
    assert [0, 0] == codes  # the two still running stop cleanly on SIGTERM
    assert 0 == outbox.pending()
    assert KILLS + 2 == len(relays.processes)
    client.close()
    engine.dispose()
