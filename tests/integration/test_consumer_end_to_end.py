"""The real thing, end to end: 10,000 messages written to an outbox on PostgreSQL,
published by two ``messagebus relay`` processes to Redis, handled by three
``messagebus consume`` processes; relays and consumers killed with SIGKILL at
20 random instants and started again, and Redis itself killed and restarted
once mid-run. Nothing is lost and nothing is handled twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy
from sqlalchemy import func, select

from messagebus import Metadata
from messagebus.sqlalchemy import SqlAlchemyDeadLetterStore
from messagebus.transport import OutgoingMessage
from tests.servers import RedisServer, unique_name

from . import consumer_app as app
from ._relay_helpers import make_outbox, write
from .consumer_app import Reserve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 10_000
KILLS = 20
#: A bound on each wait, so that a hang fails instead (no timing is asserted).
PATIENCE = 300.0


class Process:
    """A process of the command line, its output in a file (a pipe would fill)."""

    def __init__(
        self, name: str, command: list[str], folder: Path, environment: dict[str, str]
    ) -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def ready(self) -> bool:
        """Whether it said it runs (after setting its signal handlers)."""
        text = self.log.read_text(errors="replace")
        return "consuming " in text or "relay: " in text

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def started() -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:  # a failed test leaves no process behind
        if process.process.poll() is None:
            process.kill()


def test_relays_and_consumers_killed_and_redis_restarted_lose_nothing_and_repeat_nothing(
    postgres_database: str, redis_server: RedisServer, tmp_path: Path, started: list[Process]
) -> None:
    engine = app.make_engine(postgres_database)
    outbox = make_outbox(engine)
    # The tables the processes would make, made once: concurrent CREATE TABLEs collide.
    SqlAlchemyDeadLetterStore(engine).create_table()
    client = redis.Redis.from_url(redis_server.url)
    stream, group = unique_name("orders"), "reservations"
    rng = random.Random(20261202)
    environment = {
        **os.environ,
        "CONSUMER_TEST_DATABASE_URL": postgres_database,
        "CONSUMER_TEST_QUIET": "1",
    }
    base = [sys.executable, "-m", "messagebus.cli"]
    relay_command = [
        *base, "relay", "--db", postgres_database, "--redis", redis_server.url,
        "--table", outbox.table.name, "--batch-size", "100", "--poll-interval", "0.2",
    ]  # fmt: skip

    def consumer_command(name: str) -> list[str]:
        return [
            *base, "consume", "--app", "tests.integration.consumer_app:make_bus",
            "--group", group, "--stream", stream, "--redis", redis_server.url,
            "--consumer", name, "--batch", "20", "--claim-idle", "2", "--block", "0.1",
        ]  # fmt: skip

    names = iter(range(1000))

    def start(kind: str) -> Process:
        name = f"{kind}-{next(names)}"
        command = relay_command if kind == "relay" else consumer_command(name)
        process = Process(name, command, tmp_path, environment)
        started.append(process)
        return process

    def running() -> list[Process]:
        return [process for process in started if process.process.poll() is None]

    def wait_until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + PATIENCE
        while not condition():
            assert time.monotonic() < deadline, f"gave up waiting: {what}"
            for process in started:
                code = process.process.poll()
                assert code in (None, -signal.SIGKILL), f"{process.name}: {process.output()}"
            time.sleep(0.05)

    # The group first: entries published before it exists are read too ("0"), but
    # this way the consumers start reading at once.
    client.xgroup_create(stream, group, "0", mkstream=True)
    for _ in range(2):
        start("relay")
    for _ in range(3):
        start("consumer")
    wait_until(lambda: sum("consuming" in p.output() for p in started) == 3, "consumers started")

    # Instants: after this many handlings (random, spread over the run), one
    # process (a relay or a consumer, at random) is killed and another started.
    instants = sorted(rng.sample(range(200, MESSAGES - 200), KILLS))
    redis_restart_at = instants[KILLS // 2] + 50
    written, restarted = 0, False
    for instant in [*instants, MESSAGES]:
        # Rows keep coming while things are killed: the writer stays ahead of the consumers.
        while written < min(MESSAGES, instant + 1500):
            chunk = [_outgoing(stream, f"o{number}") for number in range(written, written + 100)]
            write(outbox, chunk)
            written += 100
        if instant == MESSAGES:
            break
        wait_until(lambda at=instant: app.count_handled(engine) >= at, f"{instant} handled")
        if not restarted and instant >= redis_restart_at:
            restarted = True
            redis_server.restart(kill=True)  # SIGKILL: only what it wrote to its log survives
        victim = rng.choice(running())
        victim.kill()
        start("relay" if victim.name.startswith("relay") else "consumer")

    wait_until(lambda: app.count_handled(engine) >= MESSAGES, "every message handled")
    wait_until(lambda: outbox.pending() == 0, "every row published")
    wait_until(lambda: int(client.xpending(stream, group)["pending"]) == 0, "nothing pending")
    survivors = running()
    # Each has started (its first line comes after its signal handlers are set):
    # one started a moment ago may still be importing, and SIGTERM would kill it.
    wait_until(lambda: all(p.ready() for p in survivors), "the last processes started")
    for process in survivors:
        process.process.send_signal(signal.SIGTERM)
    codes = [process.process.wait(timeout=PATIENCE) for process in survivors]

    with engine.connect() as connection:
        rows, distinct = connection.execute(
            select(func.count(), func.count(app.Handled.message_id.distinct()))
        ).one()
        letters = connection.scalar(sqlalchemy.text("SELECT count(*) FROM messagebus_dead_letters"))
    assert (MESSAGES, MESSAGES, 0) == (rows, distinct, letters)
    assert [0] * len(survivors) == codes
    assert (True, 5 + KILLS) == (restarted, len(started))
    client.close()
    engine.dispose()


def _outgoing(stream: str, order: str) -> OutgoingMessage:
    fields = app.fields(Reserve(order), Metadata.new())
    return OutgoingMessage(
        message_id=fields["id"],
        name=fields["name"],
        version=int(fields["version"]),
        payload=fields["payload"],
        metadata=fields["metadata"],
        destination=stream,
        key=fields["key"],
    )
