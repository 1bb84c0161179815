"""Replay on the allocation example (DESIGN.md §6): run a scenario with the bus logging
to a file, wipe the database, replay the log with ``messagebus replay``, and the state
equals the original run's; on SQLite and on PostgreSQL.

Two scenarios: over HTTP against the example's server process (its log is its
stderr), and in this process with :func:`messagebus.logging.configure_logging`
writing to a file (it reaches ChangeBatchQuantity, which the web API does not,
and with it the deallocations and reallocations that the handlers raise).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog

from allocation.adapters import orm
from allocation.adapters.notifications import FileNotifications
from allocation.bootstrap import bootstrap
from allocation.domain import commands
from allocation.entrypoints.server import PACKAGE_ROOT, ServerProcess
from allocation.service_layer.handlers import InvalidSku
from messagebus.logging import configure_logging

pytestmark = pytest.mark.e2e

#: The application ``messagebus replay --app replay_app:service`` loads: the
#: service as deployed, on the database of ALLOCATION_DATABASE_URL.
REPLAY_APP = """
import os
from pathlib import Path

from allocation.adapters import orm
from allocation.adapters.notifications import FileNotifications
from allocation.bootstrap import bootstrap


def service():
    engine = orm.make_engine(os.environ["ALLOCATION_DATABASE_URL"])
    orm.create_schema(engine)
    return bootstrap(engine, notifications=FileNotifications(Path(os.environ["MAIL_FILE"])))
"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'allocation.sqlite3'}"
    create: Callable[[], str] = request.getfixturevalue("postgres_database_factory")
    return create()


def state(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the service keeps, by natural keys (surrogate ids left out)."""
    engine = orm.make_engine(url)
    b, lines, allocated = orm.batches, orm.order_lines, orm.allocations
    try:
        with engine.connect() as connection:

            def rows(query: Any) -> list[tuple[Any, ...]]:
                return sorted(tuple(row) for row in connection.execute(query))

            return {
                "products": rows(sa.select(orm.products.c.sku, orm.products.c.version_number)),
                "batches": rows(
                    sa.select(b.c.reference, b.c.sku, b.c._purchased_quantity, b.c.eta)
                ),
                "order_lines": rows(sa.select(lines.c.orderid, lines.c.sku, lines.c.qty)),
                "allocations": rows(
                    sa.select(lines.c.orderid, lines.c.sku, b.c.reference)
                    .join(allocated, allocated.c.orderline_id == lines.c.id)
                    .join(b, allocated.c.batch_id == b.c.id)
                ),
                "allocations_view": rows(sa.select(orm.allocations_view)),
            }
    finally:
        engine.dispose()


def wipe(url: str) -> None:
    engine = orm.make_engine(url)
    orm.metadata.drop_all(engine)
    assert [] == sa.inspect(engine).get_table_names()
    engine.dispose()


def replay_cli(log: Path, url: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``messagebus replay LOG --app replay_app:service``, as a user runs it."""
    (folder / "replay_app.py").write_text(textwrap.dedent(REPLAY_APP))
    env = {
        **os.environ,
        "ALLOCATION_DATABASE_URL": url,
        "MAIL_FILE": str(folder / "replayed-mail.jsonl"),
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "messagebus.cli", "replay", str(log)]
    return subprocess.run(
        [*command, "--app", "replay_app:service", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def counts(table: str) -> dict[str, str]:
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) == 2 and cells[1].replace(",", "").isdigit():
            rows[cells[0]] = cells[1]
    return rows


def call(url: str, path: str, body: Any) -> int:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)


def test_a_wiped_database_is_rebuilt_by_replaying_the_servers_log(
    database_url: str, tmp_path: Path
) -> None:
    log, mail = tmp_path / "server.log", tmp_path / "mail.jsonl"
    with (
        log.open("w") as log_file,
        ServerProcess(database_url, log=log_file, extra_args=["--mail-file", str(mail)]) as server,
    ):
        for ref, sku, qty, eta in [
            ("b-later", "LAMP", 20, "2031-01-02"),
            ("b-early", "LAMP", 20, "2031-01-01"),
            ("b-now", "LAMP", 5, None),
            ("b-chair", "CHAIR", 3, None),
        ]:
            assert 201 == call(
                server.url, "/add_batch", {"ref": ref, "sku": sku, "qty": qty, "eta": eta}
            )
        for orderid, sku, qty in [
            ("o1", "LAMP", 4),  # the batch in the warehouse first
            ("o2", "LAMP", 10),  # then the earliest to arrive
            ("o3", "CHAIR", 3),
            ("o4", "CHAIR", 1),  # out of stock: a notification
            ("o5", "LAMP", 12),
        ]:
            assert 202 == call(
                server.url, "/allocate", {"orderid": orderid, "sku": sku, "qty": qty}
            )
        assert 400 == call(server.url, "/allocate", {"orderid": "o6", "sku": "NOPE", "qty": 1})
    assert 0 == server.returncode, log.read_text()
    before = state(database_url)
    assert 4 == len(before["allocations"])  # o4 was out of stock

    wipe(database_url)
    result = replay_cli(log, database_url, tmp_path)

    assert 0 == result.returncode, result.stderr
    assert before == state(database_url)
    summary = counts(result.stdout)
    assert ("9", "1") == (summary["replayed"], summary["handling failed"]), result.stdout
    # The server's other lines are JSON too (configure_logging renders waitress's
    # records as well); a line that is not (a stray print, a crash's traceback) is
    # reported as a bad line, and nothing else is. Blank lines are skipped, not reported.
    plain = [
        number
        for number, line in enumerate(log.read_text().splitlines(), 1)
        if line.strip() and not line.startswith("{")
    ]
    bad = [
        int(line.split()[1].rstrip(":"))
        for line in result.stderr.splitlines()
        if "not JSON" in line
    ]
    assert plain == bad, result.stderr
    assert str(len(plain)) == summary["bad lines"], result.stdout
    assert "Invalid sku NOPE" in result.stderr  # replayed, and refused again
    # Handlers run again with all they do: the out-of-stock mail was sent again.
    assert mail.read_text() == (tmp_path / "replayed-mail.jsonl").read_text()


@pytest.fixture
def logging_restored() -> Iterator[None]:
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.configure(**config)


@pytest.mark.usefixtures("logging_restored")
def test_deallocations_and_reallocations_are_raised_again_by_the_replay(
    database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    handler = configure_logging(json=True, path=log, cache_loggers=False)
    engine = orm.make_engine(database_url)
    orm.create_schema(engine)
    service = bootstrap(
        engine, notifications=FileNotifications(tmp_path / "mail.jsonl"), sleep=lambda _: None
    )
    bus = service.bus
    bus.handle(commands.CreateBatch("b1", "TABLE", 5))
    bus.handle(commands.CreateBatch("b2", "TABLE", 6))
    bus.handle(commands.Allocate("o1", "TABLE", 4))  # to b1
    bus.handle(commands.Allocate("o2", "TABLE", 4))  # to b2
    bus.handle(commands.CreateBatch("b3", "TABLE", 10, datetime.date(2031, 1, 1)))
    # b1 shrinks: o1, its only line, is deallocated, and reallocated to b3 (b2 is short).
    # (With two lines in the batch, which one goes would be the domain's arbitrary pick,
    # set.pop(), and could differ between the run and the replay.)
    bus.handle(commands.ChangeBatchQuantity("b1", "TABLE", 3))
    bus.handle(commands.Allocate("o3", "TABLE", 2))  # to b1
    bus.handle(commands.Allocate("o4", "TABLE", 20))  # out of stock
    with pytest.raises(InvalidSku):
        bus.handle(commands.ChangeBatchQuantity("b9", "NOPE", 1))
    handler.flush()
    engine.dispose()
    before = state(database_url)
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(entry.get("message_name") == "allocation.Deallocated" for entry in logged)

    wipe(database_url)
    result = replay_cli(log, database_url, tmp_path)

    assert 0 == result.returncode, result.stderr
    assert before == state(database_url)
    assert ("o1", "TABLE", "b3") in before["allocations"]
    assert {"replayed": "8", "failed": "1", "handling failed": "1"}.items() <= counts(
        result.stdout
    ).items()
