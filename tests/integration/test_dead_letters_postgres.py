"""Dead letters in a real PostgreSQL database (DESIGN.md §7): stored by the bus in the
application's database, listed, and retried once the handler is fixed; the same from
the command line. Skipped without PostgreSQL, except under CI=true (tests/conftest.py)."""

from __future__ import annotations

import functools
import json
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.orm import sessionmaker

from messagebus import Command, Context, Event, MessageBus, Registry
from messagebus.cli import main
from messagebus.dead_letters import DeadLetters
from messagebus.sqlalchemy import SqlAlchemyUnitOfWork
from messagebus.sqlalchemy._dead_letters import SqlAlchemyDeadLetterStore, dead_letter_table

pytestmark = pytest.mark.integration

metadata = sa.MetaData()
invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("order_ref", sa.String(50), primary_key=True),
    sa.Column("amount", sa.Integer, nullable=False),
)
dead_letters = dead_letter_table(metadata)


@attrs.frozen
class Ship(Command[None]):
    order_ref: str
    amount: int


@attrs.frozen
class Shipped(Event):
    order_ref: str
    amount: int


class BillingDown(Exception):
    pass


def quiet() -> Any:
    return structlog.wrap_logger(structlog.ReturnLogger(), processors=[])


def make_bus(engine: sa.Engine, *, billing_works: bool) -> MessageBus:
    """The application as deployed: before the fix (billing_works=False), or after."""
    registry = Registry()

    @registry.register(uow=False)
    def ship(command: Ship, context: Context) -> None:
        context.emit(Shipped(command.order_ref, command.amount))

    @registry.register
    def bill(event: Shipped, uow: SqlAlchemyUnitOfWork) -> None:
        uow.session.execute(
            invoices.insert().values(order_ref=event.order_ref, amount=event.amount)
        )
        if not billing_works:
            raise BillingDown(f"cannot bill {event.order_ref}")

    store = SqlAlchemyDeadLetterStore(engine, table=dead_letters)
    return MessageBus(
        registry,
        uow=functools.partial(SqlAlchemyUnitOfWork, sessionmaker(engine)),
        dead_letters=store,
        logger=quiet(),
    )


@pytest.fixture
def engine(postgres_database: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_database)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def billed(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(connection.execute(sa.select(invoices.c.order_ref, invoices.c.amount)).all())


def rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        query = sa.select(dead_letters).order_by(dead_letters.c.id)
        return [dict(row) for row in connection.execute(query).mappings()]


def test_letters_are_stored_in_the_applications_database_with_everything(
    engine: sa.Engine,
) -> None:
    bus = make_bus(engine, billing_works=False)

    bus.handle(Ship("o1", 30))

    assert {} == billed(engine)  # the failed attempt was rolled back
    (row,) = rows(engine)
    assert {
        "message_name": "Shipped",
        "message_version": 1,
        "payload": {"order_ref": "o1", "amount": 30},
        "handler": f"{__name__}.make_bus.<locals>.bill",
        "error": "BillingDown: cannot bill o1",
        "attempts": 1,
        "resolved_at": None,
        "retries": 0,
    }.items() <= row.items()
    assert row["message_id"] == row["message_metadata"]["message_id"]
    assert "Traceback" in row["traceback"]
    assert row["failed_at"].tzinfo is not None


def test_a_handler_fixed_between_the_failure_and_the_retry_succeeds_on_retry(
    engine: sa.Engine, postgres_database: str
) -> None:
    before_the_fix = make_bus(engine, billing_works=False)
    for order_ref, amount in [("o1", 30), ("o2", 45), ("o3", 10)]:
        before_the_fix.handle(Ship(order_ref, amount))
    assert 3 == len(rows(engine))

    # A new deployment, with billing fixed: another process, engine and store.
    fixed_engine = sa.create_engine(postgres_database)
    after_the_fix = make_bus(fixed_engine, billing_works=True)
    letters = DeadLetters(
        SqlAlchemyDeadLetterStore(fixed_engine, table=dead_letters), after_the_fix
    )
    first, *_ = letters.list()

    assert "resolved" == letters.retry(first.id).outcome
    assert {"o1": 30} == billed(engine)
    assert ["resolved", "resolved"] == [r.outcome for r in letters.retry_type("Shipped")]
    assert {"o1": 30, "o2": 45, "o3": 10} == billed(engine)

    assert [] == letters.list()
    kept = rows(engine)  # nothing deleted: every letter resolved, with when
    assert 3 == len(kept)
    assert all(row["resolved_at"] is not None and row["retries"] == 1 for row in kept)
    assert 3 == letters.purge(resolved=True)
    assert [] == rows(engine)
    fixed_engine.dispose()


def test_a_retry_that_fails_again_is_recorded_and_the_letter_stays_pending(
    engine: sa.Engine,
) -> None:
    bus = make_bus(engine, billing_works=False)
    bus.handle(Ship("o1", 30))
    letters = DeadLetters(SqlAlchemyDeadLetterStore(engine, table=dead_letters), bus)

    (result,) = letters.retry_all()

    assert "failed" == result.outcome
    (row,) = rows(engine)  # the same letter, not a second one
    assert (None, 1, "BillingDown: cannot bill o1") == (
        row["resolved_at"],
        row["retries"],
        row["last_error"],
    )
    assert "BillingDown: cannot bill o1" == row["error"]  # the original error, kept
    assert {} == billed(engine)


APP = """
import os

import sqlalchemy as sa

from {test_module} import make_bus

ENGINES = []


def bus():
    engine = sa.create_engine(os.environ["SHOP_DATABASE_URL"])
    ENGINES.append(engine)
    return make_bus(engine, billing_works=os.environ.get("SHOP_BILLING") == "works")
"""


@pytest.fixture
def app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_database: str
) -> Iterator[Callable[[str], str]]:
    """An application module in the current directory; returns ``--app`` for it."""
    name = f"shop_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP.format(test_module=__name__)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOP_DATABASE_URL", postgres_database)

    def deployed(billing: str) -> str:
        monkeypatch.setenv("SHOP_BILLING", billing)
        return f"{name}:bus"

    yield deployed
    module = sys.modules.pop(name, None)
    for engine in getattr(module, "ENGINES", ()):
        engine.dispose()


def test_the_command_line_lists_shows_and_retries_letters_in_postgresql(
    engine: sa.Engine, app: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    make_bus(engine, billing_works=False).handle(Ship("o1", 30))

    assert 0 == main(["dead-letters", "list", "--json", "--app", app("broken")])
    (listed,) = json.loads(capsys.readouterr().out)
    assert ("Shipped", "pending") == (listed["message_name"], listed["status"])

    assert 1 == main(["dead-letters", "retry", "--all", "--app", app("broken")])
    assert "failed again: BillingDown: cannot bill o1" in capsys.readouterr().err

    assert 0 == main(["dead-letters", "retry", str(listed["id"]), "--app", app("works")])
    assert f"{listed['id']}: resolved" in capsys.readouterr().out
    assert {"o1": 30} == billed(engine)

    assert 0 == main(["dead-letters", "show", str(listed["id"]), "--json", "--app", app("works")])
    shown = json.loads(capsys.readouterr().out)
    assert ("resolved", 2) == (shown["status"], shown["retries"])
    assert {"order_ref": "o1", "amount": 30} == shown["payload"]
