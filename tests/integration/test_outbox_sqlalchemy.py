"""The outbox table: written with the change by the units of work, claimed by relays."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from messagebus.sqlalchemy import (
    AsyncSqlAlchemyOutbox,
    AsyncSqlAlchemyUnitOfWork,
    SqlAlchemyOutbox,
    SqlAlchemyUnitOfWork,
    outbox_table,
)

from ._relay_helpers import make_engine, make_outbox, message, write

pytestmark = pytest.mark.integration

KINDS = ["sqlite", "postgresql"]


class Clock:
    """A controlled clock: times move only when the test moves them (from a
    minute after the rows were written, by the real clock)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture(params=KINDS)
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_database_factory: Callable[[], str]
) -> Iterator[sa.Engine]:
    engine = make_engine(request.param, tmp_path, postgres_database_factory)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    yield engine
    engine.dispose()


def numbers(outbox: SqlAlchemyOutbox, limit: int = 100) -> list[tuple[str, int]]:
    """What a claim takes now, as (key, n); the claim is released."""
    import json

    claim = outbox.claim(limit)
    outbox.release(claim)
    return [(m.key, json.loads(m.payload)["n"]) for m in claim.messages]


# -- writing --------------------------------------------------------------------------


def test_a_committed_unit_of_work_writes_its_staged_messages_in_order(engine: sa.Engine) -> None:
    outbox = make_outbox(engine)
    uow = SqlAlchemyUnitOfWork(sessionmaker(engine), outbox_table=outbox.table)
    sent = [message("s", "k1", 1), message("s", "k2", 2)]

    uow.stage_outgoing(sent)
    uow.commit()
    uow.close()

    claim = outbox.claim(10)
    outbox.release(claim)
    assert sent == claim.messages


def test_a_rolled_back_unit_of_work_writes_nothing(engine: sa.Engine) -> None:
    outbox = make_outbox(engine)
    uow = SqlAlchemyUnitOfWork(sessionmaker(engine), outbox_table=outbox.table)

    uow.stage_outgoing([message("s", "k", 1)])
    uow.rollback()
    uow.commit()  # a later commit of the same unit of work sends nothing either
    uow.close()

    assert 0 == outbox.pending()


def test_a_failed_commit_writes_nothing(sqlite_engine: sa.Engine) -> None:
    outbox = make_outbox(sqlite_engine)
    other = outbox_table(sa.MetaData(), name="not_created")  # no such table: the insert fails
    uow = SqlAlchemyUnitOfWork(sessionmaker(sqlite_engine), outbox_table=other)
    uow.stage_outgoing([message("s", "k", 1)])

    with pytest.raises(sa.exc.OperationalError, match="not_created"):
        uow.commit()
    uow.rollback()
    uow.close()

    assert 0 == outbox.pending()


def test_staging_something_else_than_an_outgoing_message_is_refused(
    sqlite_engine: sa.Engine,
) -> None:
    uow = SqlAlchemyUnitOfWork(sessionmaker(sqlite_engine))

    with pytest.raises(TypeError, match="OutgoingMessage values, not dict"):
        uow.stage_outgoing([{"name": "Allocated"}])  # type: ignore[list-item]
    uow.close()


def test_the_default_table_is_messagebus_outbox(sqlite_engine: sa.Engine) -> None:
    outbox = SqlAlchemyOutbox(sqlite_engine)
    outbox.create_table()
    uow = SqlAlchemyUnitOfWork(sessionmaker(sqlite_engine))
    uow.stage_outgoing([message("s", "k", 1)])
    uow.commit()
    uow.close()

    assert "messagebus_outbox" == outbox.table.name
    assert 1 == outbox.pending()


@pytest.mark.parametrize("kind", KINDS)
def test_the_async_unit_of_work_writes_on_commit_and_nothing_on_rollback(
    kind: str, tmp_path: Path, postgres_database_factory: Callable[[], str]
) -> None:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    else:
        url = postgres_database_factory()
    sync_engine = sa.create_engine(url.replace("+aiosqlite", ""))
    outbox = make_outbox(sync_engine)
    sent = [message("s", "k", 1), message("s", "k", 2)]

    async def scenario() -> list[object]:
        engine = create_async_engine(url)
        factory = async_sessionmaker(engine)
        try:
            rolled_back = AsyncSqlAlchemyUnitOfWork(factory, outbox_table=outbox.table)
            rolled_back.stage_outgoing([message("s", "k", 0)])
            await rolled_back.rollback()
            await rolled_back.close()

            committed = AsyncSqlAlchemyUnitOfWork(factory, outbox_table=outbox.table)
            committed.stage_outgoing(sent)
            await committed.commit()
            await committed.close()

            store = AsyncSqlAlchemyOutbox(engine, table=outbox.table)
            claim = await store.claim(10)
            await store.release(claim)
            return list(claim.messages)
        finally:
            await engine.dispose()

    assert sent == asyncio.run(scenario())
    sync_engine.dispose()


# -- claiming ---------------------------------------------------------------------------


def test_a_claim_takes_the_oldest_rows_first(engine: sa.Engine) -> None:
    outbox = make_outbox(engine)
    write(outbox, [message("s", f"k{n % 3}", n) for n in range(10)])

    assert [(f"k{n % 3}", n) for n in range(4)] == numbers(outbox, limit=4)


def test_marked_rows_are_not_claimed_again(engine: sa.Engine) -> None:
    outbox = make_outbox(engine)
    write(outbox, [message("s", "k", n) for n in range(3)])

    claim = outbox.claim(2)
    outbox.finish(claim, [entry.id for entry in claim.entries], {})

    assert [("k", 2)] == numbers(outbox)
    assert 1 == outbox.pending()


def test_a_refused_row_waits_and_holds_its_key_back_but_not_other_keys(engine: sa.Engine) -> None:
    clock = Clock()
    outbox = make_outbox(engine, clock=clock, retry_delay=lambda tries: 10.0 * tries)
    write(outbox, [message("s", "a", 1), message("s", "b", 2), message("s", "a", 3)])

    claim = outbox.claim(10)
    first = claim.entries[0]
    outbox.finish(claim, [], {first.id: "ResponseError: WRONGTYPE"})

    assert [("b", 2)] == numbers(outbox)  # a's later row does not overtake it
    clock.advance(10)
    assert [("a", 1), ("b", 2), ("a", 3)] == numbers(outbox)


def test_a_row_refused_max_tries_times_is_parked_and_lets_its_key_go_on(
    engine: sa.Engine,
) -> None:
    clock = Clock()
    outbox = make_outbox(engine, clock=clock, max_tries=2, retry_delay=lambda tries: 1.0)
    write(outbox, [message("s", "a", 1), message("s", "a", 2)])

    for _ in range(2):
        claim = outbox.claim(1)
        outbox.finish(claim, [], {claim.entries[0].id: "ResponseError: WRONGTYPE"})
        clock.advance(1)

    parked = outbox.list_parked()
    assert ['{"n": 1}'] == [p.message.payload for p in parked]
    assert (2, "ResponseError: WRONGTYPE", True) == (
        parked[0].tries,
        parked[0].last_error,
        parked[0].parked,
    )
    assert [("a", 2)] == numbers(outbox)


def test_a_retried_parked_row_is_pending_again(engine: sa.Engine) -> None:
    outbox = make_outbox(engine, max_tries=1)
    write(outbox, [message("s", "a", 1), message("s", "b", 2)])
    claim = outbox.claim(10)
    outbox.finish(claim, [], {entry.id: "refused" for entry in claim.entries})
    first, second = outbox.list_parked()

    assert 1 == outbox.retry_parked([first.id])
    assert [second.id] == [entry.id for entry in outbox.list_parked()]
    assert [("a", 1)] == numbers(outbox)
    assert 1 == outbox.retry_parked()
    assert 2 == outbox.pending()


def test_sent_rows_are_deleted_after_the_retention_period(engine: sa.Engine) -> None:
    clock = Clock()
    outbox = make_outbox(engine, clock=clock)
    write(outbox, [message("s", "a", n) for n in range(3)])
    claim = outbox.claim(2)
    outbox.finish(claim, [entry.id for entry in claim.entries], {})

    clock.advance(3599)
    assert 0 == outbox.delete_sent(dt.timedelta(hours=1))
    clock.advance(2)
    assert 2 == outbox.delete_sent(dt.timedelta(hours=1))
    assert 1 == outbox.pending()  # the pending row is kept, however old


def test_max_tries_must_be_positive(sqlite_engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="max_tries must be at least 1, not 0"):
        SqlAlchemyOutbox(sqlite_engine, max_tries=0)


def test_two_claims_on_postgresql_never_share_a_key(
    postgres_database_factory: Callable[[], str], tmp_path: Path
) -> None:
    engine = make_engine("postgresql", tmp_path, postgres_database_factory)
    outbox = make_outbox(engine)
    write(outbox, [message("s", key, n) for n in range(4) for key in ("a", "b", "c")])

    first = outbox.claim(2)  # the oldest rows: a and b
    second = outbox.claim(100)  # a and b are held: only c's rows
    try:
        first_keys = {entry.message.key for entry in first.entries}
        second_keys = {entry.message.key for entry in second.entries}
        assert {"a", "b"} == first_keys
        assert {"c"} == second_keys
        assert 4 == len(second.entries)
    finally:
        outbox.release(second)
        outbox.finish(first, [entry.id for entry in first.entries], {})

    # Once the first claim ended, its keys are free: the rest of a and b, in order.
    assert [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)] == [
        pair for pair in numbers(outbox) if pair[0] != "c"
    ]
    engine.dispose()


def test_a_claim_on_postgresql_sees_what_the_previous_holder_of_a_key_marked(
    postgres_database_factory: Callable[[], str], tmp_path: Path
) -> None:
    engine = make_engine("postgresql", tmp_path, postgres_database_factory)
    outbox = make_outbox(engine)
    write(outbox, [message("s", "a", n) for n in range(3)])

    first = outbox.claim(2)
    second = outbox.claim(100)  # a is held: nothing
    assert [] == second.entries
    outbox.release(second)
    outbox.finish(first, [entry.id for entry in first.entries], {})

    assert [("a", 2)] == numbers(outbox)
    engine.dispose()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("key", "k" * 256, "the key of outgoing message 'id-1' is longer than 255 characters"),
        ("destination", "", "outgoing message 'id-1' has no destination"),
        ("message_id", "i" * 65, "is longer than 64 characters"),
    ],
)
def test_a_message_the_table_cannot_keep_is_refused_when_staged(
    sqlite_engine: sa.Engine, field: str, value: str, error: str
) -> None:
    import attrs

    base = attrs.evolve(message("s", "k", 1), message_id="id-1")
    uow = SqlAlchemyUnitOfWork(sessionmaker(sqlite_engine))

    with pytest.raises(ValueError, match=error):
        uow.stage_outgoing([attrs.evolve(base, **{field: value})])
    uow.close()


def test_two_transactions_changing_one_row_write_their_rows_in_the_order_they_commit(
    postgres_database_factory: Callable[[], str], tmp_path: Path
) -> None:
    import threading

    from sqlalchemy.orm import registry

    engine = make_engine("postgresql", tmp_path, postgres_database_factory)
    outbox = make_outbox(engine)
    metadata = sa.MetaData()
    counters = sa.Table(
        "counters",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )

    class Counter:
        id: int
        n: int

    registry().map_imperatively(Counter, counters)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(counters.insert().values(id=1, n=0))
    factory = sessionmaker(engine)
    first = SqlAlchemyUnitOfWork(factory, outbox_table=outbox.table)
    second = SqlAlchemyUnitOfWork(factory, outbox_table=outbox.table)

    counter = first.session.get(Counter, 1)
    assert counter is not None
    counter.n += 1
    first.session.flush()  # the first holds the row's lock from here to its commit
    other = second.session.get(Counter, 1)
    assert other is not None
    other.n += 10
    second.stage_outgoing([message("s", "counter-1", 2)])  # staged before the first's
    first.stage_outgoing([message("s", "counter-1", 1)])
    committing = threading.Thread(target=second.commit)
    committing.start()
    with engine.connect() as watcher:  # until the second waits for the row's lock
        waiting = sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'UPDATE counters%'"
        )
        for _ in range(3000):
            if watcher.execute(waiting).scalar_one():
                break
            watcher.execute(sa.text("SELECT pg_sleep(0.01)"))
            watcher.commit()
        else:
            pytest.fail("the second transaction never waited for the first")
    first.commit()
    committing.join()
    first.close()
    second.close()

    assert [("counter-1", 1), ("counter-1", 2)] == numbers(outbox)
    engine.dispose()


def test_a_claim_on_postgresql_locks_only_the_keys_of_the_rows_it_takes(
    postgres_database_factory: Callable[[], str], tmp_path: Path
) -> None:
    engine = make_engine("postgresql", tmp_path, postgres_database_factory)
    outbox = make_outbox(engine)
    write(outbox, [message("s", key, n) for key in ("a", "b", "c") for n in range(4)])

    first = outbox.claim(3)  # a's first three rows: only a is held
    second = outbox.claim(6)  # b's four rows, then two of c's
    third = outbox.claim(6)  # a and b are held; c's are the second's: nothing left
    try:
        assert ["a"] * 3 == [entry.message.key for entry in first.entries]
        assert ["b"] * 4 + ["c"] * 2 == [entry.message.key for entry in second.entries]
        assert [] == third.entries
    finally:
        for claim in (first, second, third):
            outbox.release(claim)
    engine.dispose()
