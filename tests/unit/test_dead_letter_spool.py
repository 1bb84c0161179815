"""A dead letter whose write fails is not lost: the write is retried while it fails
transiently, a letter that still cannot be written is kept in the store's spool file,
and ``messagebus dead-letters import`` brings spooled letters, or the bus's
``dead_letter_store_failed`` log lines, back into the table."""

from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
import structlog

from messagebus import Event, MessageBus, Registry, RetryPolicy, sensitive
from messagebus.cli import main
from messagebus.dead_letters import import_dead_letters
from messagebus.sqlalchemy._dead_letters import SqlAlchemyDeadLetterStore

HERE = __name__


@attrs.frozen
class Paid(Event):
    order: str
    card: str = sensitive(default="4111")


@attrs.frozen
class Refunded(Event):
    order: str


def quiet() -> Any:
    return structlog.wrap_logger(structlog.ReturnLogger(), processors=[])


@attrs.define
class Database:
    """The application's SQLite database, and how many of its next inserts fail."""

    engine: sa.Engine
    failing_inserts: int = 0

    def fail_inserts(self, count: int) -> None:
        self.failing_inserts = count


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    database = Database(engine)

    @sa.event.listens_for(engine, "before_cursor_execute")
    def outage(*args: Any) -> None:
        statement = args[2]
        if statement.startswith("INSERT") and database.failing_inserts:
            database.failing_inserts -= 1
            raise sqlite3.OperationalError("database is locked")

    yield database
    engine.dispose()


#: What make_bus builds on: set by the tests that run the command line.
APP: dict[str, Any] = {}


def make_bus() -> MessageBus:
    return build(APP["store"])


def build(store: SqlAlchemyDeadLetterStore, logger: Any = None) -> MessageBus:
    registry = Registry()

    @registry.register(uow=False)
    def receipt(event: Paid) -> None:
        raise ConnectionRefusedError("the mail server is down")

    @registry.register(uow=False)
    def refund_receipt(event: Refunded) -> None:
        raise ConnectionRefusedError("the mail server is down")

    return MessageBus(
        registry,
        logger=logger if logger is not None else quiet(),
        dead_letters=store,
        retry=RetryPolicy.no_retries(),
    )


def orders(store: SqlAlchemyDeadLetterStore) -> list[str]:
    """The orders of the letters in the table."""
    return sorted(stored.letter.payload["order"] for stored in store.list())


def test_a_write_that_fails_transiently_is_retried_until_it_is_stored(
    database: Database,
) -> None:
    waits: list[float] = []
    store = SqlAlchemyDeadLetterStore(database.engine, sleep=waits.append)
    store.create_table()
    bus = build(store)
    database.fail_inserts(3)

    for order in ("o1", "o2"):
        bus.handle(Paid(order))

    assert ["o1", "o2"] == orders(store)
    assert 3 == len(waits)


def test_letters_that_cannot_be_written_are_spooled_and_imported_back_by_the_cli(
    database: Database, tmp_path: Path
) -> None:
    spool = tmp_path / "dead-letters.spool"
    store = SqlAlchemyDeadLetterStore(database.engine, spool=spool, sleep=lambda _: None)
    store.create_table()
    bus = build(store)
    database.fail_inserts(10_000)  # the database is down for good

    for order in ("o1", "o2", "o3"):
        bus.handle(Paid(order))
    database.fail_inserts(0)  # it is back
    APP["store"] = store
    first = main(["dead-letters", "import", str(spool), "--app", f"{HERE}:make_bus"])
    again = main(["dead-letters", "import", str(spool), "--app", f"{HERE}:make_bus"])

    assert (0, 0) == (first, again)
    assert ["o1", "o2", "o3"] == orders(store)
    assert 3 == len(spool.read_text().splitlines())
    (stored, *_) = store.list()
    assert "4111" == stored.letter.payload["card"]  # whole: it can be retried
    assert "ConnectionRefusedError: the mail server is down" == stored.letter.error


def test_letters_the_bus_logged_as_not_stored_are_imported_from_its_log(
    database: Database, tmp_path: Path
) -> None:
    store = SqlAlchemyDeadLetterStore(database.engine, sleep=lambda _: None)
    store.create_table()
    database.fail_inserts(10_000)

    with structlog.testing.capture_logs() as entries:
        bus = build(store, logger=structlog.get_logger())
        for order in ("o1", "o2"):
            bus.handle(Refunded(order))
    # A letter whose sensitive fields the log redacted cannot come back from the log.
    redacted = {
        **entries[-1],
        "message_name": "Paid",
        "payload": {"order": "o3", "card": "[redacted]"},
    }
    entries.append(redacted)
    lines = [
        json.dumps({key: value for key, value in entry.items() if key != "exc_info"})
        for entry in entries
    ]
    database.fail_inserts(0)

    report = import_dead_letters(store, lines, serializer=bus.serializer)

    expected = [
        f"line {len(lines)}: not a dead letter that can be brought back: "
        "Paid: the log redacted its sensitive fields"
    ]
    assert expected == list(report.problems)
    assert ["o1", "o2"] == orders(store)


def test_a_spool_line_that_is_not_a_letter_is_reported_and_the_others_imported(
    database: Database, tmp_path: Path
) -> None:
    store = SqlAlchemyDeadLetterStore(database.engine)
    store.create_table()
    spool = tmp_path / "spool"
    good = build(store)  # a letter, as the store would spool it
    database.fail_inserts(10_000)
    store_with_spool = SqlAlchemyDeadLetterStore(database.engine, spool=spool, sleep=lambda _: None)
    build(store_with_spool).handle(Paid("o1"))
    database.fail_inserts(0)
    with spool.open("a") as file:
        file.write('{"event": "dead_letter_store_failed", "letter": {"payload": 5}}\n')
        file.write("not json at all, mentioning dead_letter_store_failed\n")

    report = import_dead_letters(store, spool, serializer=good.serializer)

    assert 1 == report.imported
    assert 1 == len(report.problems)
    assert report.problems[0].startswith("line 2: ")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            {"message_name": "Nope", "handler": "h", "payload": {}, "metadata": {}, "error": "E"},
            "message name 'Nope' is not registered with the bus",
        ),
        (
            {
                "letter": {
                    "message_name": "Paid",
                    "message_version": 1,
                    "payload": {},
                    "metadata": {},
                    "handler": "h",
                    "error": "E",
                    "traceback": "",
                    "attempts": 1,
                    "failed_at": "2024-05-01T12:00:00",
                }
            },
            "has no UTC offset",
        ),
        (
            {
                "letter": {
                    "message_name": "Paid",
                    "message_version": 1,
                    "payload": [],
                    "metadata": {},
                    "handler": "h",
                    "error": "E",
                    "traceback": "",
                    "attempts": 1,
                    "failed_at": "2024-05-01T12:00:00Z",
                }
            },
            "payload is a list",
        ),
        (
            {
                "letter": {
                    "message_name": "Paid",
                    "message_version": "1",
                    "payload": {},
                    "metadata": {},
                    "handler": "h",
                    "error": "E",
                    "traceback": "",
                    "attempts": 1,
                    "failed_at": "2024-05-01T12:00:00Z",
                }
            },
            "must be ints",
        ),
    ],
    ids=["unknown name", "naive time", "payload not an object", "version not an int"],
)
def test_a_line_that_is_not_a_whole_letter_is_reported_by_number(
    database: Database, line: dict[str, Any], problem: str
) -> None:
    store = SqlAlchemyDeadLetterStore(database.engine)
    store.create_table()
    lines = [
        "[1, 2] dead_letter_store_failed",
        json.dumps({"event": "dead_letter_store_failed", **line}),
    ]

    report = import_dead_letters(store, lines, serializer=build(store).serializer)

    (reported,) = report.problems
    assert reported.startswith("line 2: ")
    assert problem in reported
    assert 0 == report.imported


def test_import_of_a_missing_file_cannot_start_and_stdin_can_be_imported(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlAlchemyDeadLetterStore(database.engine)
    store.create_table()
    APP["store"] = store
    app = ["--app", f"{HERE}:make_bus"]
    line = json.dumps(
        {
            "event": "dead_letter_store_failed",
            "letter": {
                "message_name": "Paid", "message_version": 1, "payload": {"order": "o1"},
                "metadata": {}, "handler": "h", "error": "E", "traceback": "", "attempts": 1,
                "failed_at": "2024-05-01T12:00:00+00:00",
            },
        }
    )  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO(line + "\n"))

    missing = main(["dead-letters", "import", str(tmp_path / "nope"), *app])
    piped = main(["dead-letters", "import", "-", *app])

    assert (2, 0) == (missing, piped)
    assert ["o1"] == orders(store)


def test_a_sync_store_without_a_spool_raises_when_it_cannot_write_and_claims_release(
    database: Database,
) -> None:
    store = SqlAlchemyDeadLetterStore(database.engine, sleep=lambda _: None)
    store.create_table()
    bus = build(store)
    bus.handle(Paid("o1"))
    (stored,) = store.list()
    now = stored.letter.failed_at
    later = now + dt.timedelta(minutes=5)

    assert store.claim(stored.id, owner="a", now=now, until=later) is not None
    store.release(stored.id, owner="a")
    assert store.claim(stored.id, owner="b", now=now, until=later) is not None
    database.fail_inserts(10_000)
    # SQLAlchemy wraps the driver's error, or (on some versions) lets it through as it is.
    with pytest.raises((sa.exc.OperationalError, sqlite3.OperationalError)):
        store.add(stored.letter)
