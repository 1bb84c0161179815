"""Concurrent retries of dead letters on PostgreSQL: the claims of
tests/unit/test_dead_letter_claims.py on a real server (row claims that skip locked
rows), and two ``messagebus dead-letters retry --all`` processes at once, each letter's
handler run once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from messagebus.dead_letters import ManagedDeadLetterStore
from messagebus.sqlalchemy._dead_letters import SqlAlchemyDeadLetterStore
from tests.unit.test_dead_letter_claims import (  # the same tests, on PostgreSQL
    test_a_claim_that_outlived_its_lease_can_be_taken_again,
    test_a_letter_purged_during_retry_all_is_skipped_with_a_note_and_the_batch_goes_on,
    test_a_letter_purged_while_its_handler_runs_is_reported_and_the_batch_goes_on,
    test_two_retry_alls_at_once_run_each_handler_once,
)

pytestmark = pytest.mark.integration

__all__ = [
    "test_a_claim_that_outlived_its_lease_can_be_taken_again",
    "test_a_letter_purged_during_retry_all_is_skipped_with_a_note_and_the_batch_goes_on",
    "test_a_letter_purged_while_its_handler_runs_is_reported_and_the_batch_goes_on",
    "test_two_retry_alls_at_once_run_each_handler_once",
]


@pytest.fixture
def store(postgres_database: str) -> Iterator[ManagedDeadLetterStore]:
    engine = sa.create_engine(postgres_database)
    sql = SqlAlchemyDeadLetterStore(engine)
    sql.create_table()
    yield sql
    engine.dispose()


APP = textwrap.dedent(
    """
    import os

    import attrs
    import sqlalchemy as sa
    import structlog

    from messagebus import Event, MessageBus, Registry, RetryPolicy
    from messagebus.sqlalchemy import SqlAlchemyDeadLetterStore

    engine = sa.create_engine(os.environ["APP_DATABASE"])
    runs = sa.Table("runs", sa.MetaData(), sa.Column("ord", sa.String(20)))


    @attrs.frozen
    class Shipped(Event):
        order: str


    def make_bus():
        registry = Registry()

        @registry.register(uow=False)
        def bill(event: Shipped) -> None:
            if os.environ.get("BILLING") != "up":
                raise ConnectionRefusedError("billing is down")
            with engine.begin() as connection:
                connection.execute(runs.insert().values(ord=event.order))

        store = SqlAlchemyDeadLetterStore(engine)
        return MessageBus(
            registry,
            logger=structlog.wrap_logger(structlog.ReturnLogger(), processors=[]),
            dead_letters=store,
            retry=RetryPolicy.no_retries(),
        )


    def fill(count):
        runs.metadata.create_all(engine)
        SqlAlchemyDeadLetterStore(engine).create_table()
        bus = make_bus()
        for n in range(count):
            bus.handle(Shipped(f"o{n:03}"))
    """
)


def test_two_retry_all_commands_at_once_run_each_handler_once(
    postgres_database: str, tmp_path: Path
) -> None:
    (tmp_path / "shop.py").write_text(APP)
    env = {**os.environ, "APP_DATABASE": postgres_database, "PYTHONPATH": str(tmp_path)}
    count = 120
    subprocess.run([sys.executable, "-c", f"import shop; shop.fill({count})"], env=env, check=True)
    command = [sys.executable, "-m", "messagebus", "dead-letters", "retry", "--all"]
    command += ["--app", "shop:make_bus"]
    up = {**env, "BILLING": "up"}

    retriers = [
        subprocess.Popen(command, env=up, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [retrier.communicate(timeout=300) for retrier in retriers]

    assert [0, 0] == [retrier.returncode for retrier in retriers], outputs
    engine = sa.create_engine(postgres_database)
    with engine.connect() as connection:
        ran = connection.execute(sa.text("SELECT ord FROM runs ORDER BY ord")).scalars().all()
        pending = connection.execute(
            sa.text("SELECT count(*) FROM messagebus_dead_letters WHERE resolved_at IS NULL")
        ).scalar_one()
    engine.dispose()
    assert [f"o{n:03}" for n in range(count)] == ran
    assert 0 == pending
    resolved = sum(out.count(": resolved") for out, _ in outputs)
    assert count == resolved
