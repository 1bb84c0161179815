"""Scale-out for real: three ``messagebus consume`` processes in one group on
PostgreSQL and Redis, 10,000 messages, one process killed (SIGKILL) midway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from messagebus import Metadata
from messagebus.sqlalchemy import SqlAlchemyDeadLetterStore
from tests.servers import unique_name

from . import consumer_app as app
from .consumer_app import Reserve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 10_000
#: The longest any one wait may take before the test gives up (not a timing assertion:
#: a bound on a loop that otherwise ends when its condition holds).
PATIENCE = 300.0


def wait_until(
    condition: Callable[[], bool], what: str, running: list[Consumer] | None = None
) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        for consumer in running or []:
            assert consumer.process.poll() is None, f"{consumer.name} exited: {consumer.output()}"
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


class Consumer:
    """A ``messagebus consume`` process; its output goes to a file (a pipe would fill)."""

    def __init__(
        self, name: str, folder: Path, *, url: str, database: str, stream: str, group: str
    ) -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        command = [
            sys.executable, "-m", "messagebus.cli", "consume",
            "--app", "tests.integration.consumer_app:make_bus",
            "--group", group, "--stream", stream, "--redis", url, "--consumer", name,
            "--batch", "20", "--claim-idle", "2", "--block", "0.1",
        ]  # fmt: skip
        environment = {
            **os.environ,
            "CONSUMER_TEST_DATABASE_URL": database,
            "CONSUMER_TEST_QUIET": "1",
        }
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def consumers() -> Iterator[list[Consumer]]:
    started: list[Consumer] = []
    yield started
    for consumer in started:
        if consumer.process.poll() is None:
            consumer.process.kill()
        consumer.process.wait()


def test_three_consumers_handle_each_message_once_and_reclaim_a_killed_ones_entries(
    postgres_database: str, redis_url: str, consumers: list[Consumer], tmp_path: Path
) -> None:
    engine = app.make_engine(postgres_database)
    # The tables the processes would make, made once: concurrent CREATE TABLEs collide.
    SqlAlchemyDeadLetterStore(engine).create_table()
    client = redis.Redis.from_url(redis_url)
    stream, group = unique_name("scale"), unique_name("group")
    pipe = client.pipeline(transaction=False)
    for number in range(MESSAGES):
        pipe.xadd(stream, app.fields(Reserve(f"o{number}"), Metadata.new()))
    pipe.execute()

    for name in ("c0", "c1", "c2"):
        consumers.append(
            Consumer(
                name,
                tmp_path,
                url=redis_url,
                database=postgres_database,
                stream=stream,
                group=group,
            )
        )
    wait_until(lambda: app.count_handled(engine) >= MESSAGES // 3, "a third handled", consumers)

    # Kill c0 while it holds entries: stopped first, so that what it holds stays put.
    victim = consumers[0].process

    def held() -> list[str]:
        rows = client.xpending_range(stream, group, "-", "+", 1000, consumername="c0")
        return [row["message_id"].decode() for row in rows]

    def state() -> str:  # the kernel's view: "T" once the stop took effect
        stat = Path(f"/proc/{victim.pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0]

    for _ in range(10_000):
        victim.send_signal(signal.SIGSTOP)
        wait_until(lambda: state() == "T", "c0 stopped")
        orphaned = held()
        if orphaned:
            break
        victim.send_signal(signal.SIGCONT)
        wait_until(lambda: state() != "T", "c0 running again")
    assert orphaned, "c0 held no entries when it was stopped"
    victim.kill()
    victim.wait()

    survivors = consumers[1:]
    wait_until(lambda: app.count_handled(engine) >= MESSAGES, "every message handled", survivors)
    wait_until(
        lambda: int(client.xpending(stream, group)["pending"]) == 0, "nothing pending", survivors
    )
    for consumer in survivors:
        consumer.process.send_signal(signal.SIGTERM)
    codes = [consumer.process.wait(timeout=PATIENCE) for consumer in survivors]

    with engine.connect() as connection:
        rows, distinct = connection.execute(
            select(func.count(), func.count(app.Handled.message_id.distinct()))
        ).one()
    assert (MESSAGES, MESSAGES) == (rows, distinct)
    assert [] == held()
    assert [0, 0] == codes
    assert all("stopped: read" in consumer.output() for consumer in survivors)
    client.close()
    engine.dispose()
