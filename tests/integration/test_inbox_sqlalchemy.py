"""The inbox table: claim_incoming on the SQLAlchemy units of work (sync and async),
on SQLite and PostgreSQL, and its retention clean-up."""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from messagebus import ConfigurationError
from messagebus.sqlalchemy import (
    AsyncSqlAlchemyRepository,
    AsyncSqlAlchemyUnitOfWork,
    SqlAlchemyRepository,
    SqlAlchemyUnitOfWork,
    inbox_table,
    purge_inbox,
)
from messagebus.sqlalchemy._inbox import claim_statement


class Base(DeclarativeBase):
    pass


class Note(Base):
    """What a handler changes, in the same transaction as its claim."""

    __tablename__ = "inbox_notes"

    key: Mapped[str] = mapped_column(primary_key=True)
    text: Mapped[str]


INBOX = inbox_table(Base.metadata, name="test_inbox")
UTC = _dt.timezone.utc


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inbox.sqlite3'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[sqlalchemy.Engine]:
    engine = sqlalchemy.create_engine(database_url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: sqlalchemy.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)


def new_uow(session_factory: Callable[[], Session]) -> SqlAlchemyUnitOfWork:
    return SqlAlchemyUnitOfWork(
        session_factory, inbox_table=INBOX, notes=SqlAlchemyRepository(Note, key="key")
    )


def handled(engine: sqlalchemy.Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(INBOX.c.message_id, INBOX.c.handler).order_by(
                INBOX.c.message_id, INBOX.c.handler
            )
        )
        return [(row.message_id, row.handler) for row in rows]


def notes(engine: sqlalchemy.Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(select(Note.key).order_by(Note.key)))


# -- claims -------------------------------------------------------------------------


def test_a_first_claim_is_granted_and_a_claim_after_its_commit_is_refused(
    engine: sqlalchemy.Engine, session_factory: sessionmaker[Session]
) -> None:
    with new_uow(session_factory) as uow:
        first = uow.claim_incoming("m1", "handlers.a")
        uow.commit()
    with new_uow(session_factory) as uow:
        again = uow.claim_incoming("m1", "handlers.a")
        uow.commit()

    assert (True, False) == (first, again)
    assert [("m1", "handlers.a")] == handled(engine)


def test_the_same_message_is_claimed_once_per_handler(
    engine: sqlalchemy.Engine, session_factory: sessionmaker[Session]
) -> None:
    with new_uow(session_factory) as uow:
        claims = [uow.claim_incoming("m1", "handlers.a"), uow.claim_incoming("m1", "handlers.b")]
        uow.commit()

    assert [True, True] == claims
    assert [("m1", "handlers.a"), ("m1", "handlers.b")] == handled(engine)


def test_a_claim_commits_with_the_handlers_change(
    engine: sqlalchemy.Engine, session_factory: sessionmaker[Session]
) -> None:
    with new_uow(session_factory) as uow:
        assert uow.claim_incoming("m1", "handlers.a")
        uow.notes.add(Note(key="n1", text="from m1"))
        uow.commit()

    assert (["n1"], [("m1", "handlers.a")]) == (notes(engine), handled(engine))


def test_a_rolled_back_claim_leaves_nothing_and_the_message_can_be_claimed_again(
    engine: sqlalchemy.Engine, session_factory: sessionmaker[Session]
) -> None:
    with new_uow(session_factory) as uow:
        assert uow.claim_incoming("m1", "handlers.a")
        uow.notes.add(Note(key="n1", text="from m1"))
        uow.session.flush()
        uow.rollback()
    assert ([], []) == (notes(engine), handled(engine))

    with new_uow(session_factory) as uow:
        granted = uow.claim_incoming("m1", "handlers.a")
        uow.commit()
    assert granted is True


def test_a_claim_in_a_unit_of_work_closed_without_commit_is_not_kept(
    engine: sqlalchemy.Engine, session_factory: sessionmaker[Session]
) -> None:
    uow = new_uow(session_factory)
    assert uow.claim_incoming("m1", "handlers.a")
    uow.close()

    assert [] == handled(engine)


def test_the_default_inbox_table_is_messagebus_inbox(tmp_path: Path) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'default.sqlite3'}")
    inbox_table(sqlalchemy.MetaData()).create(engine)
    factory = sessionmaker(engine)
    with SqlAlchemyUnitOfWork(factory) as uow:
        granted = [uow.claim_incoming("m1", "h"), uow.claim_incoming("m1", "h")]
        uow.commit()
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT message_id, handler FROM messagebus_inbox")
        )
        assert [("m1", "h")] == [tuple(row) for row in rows]
    assert [True, False] == granted
    engine.dispose()


@pytest.mark.parametrize(
    ("message_id", "handler", "problem"),
    [
        ("", "h", "a message id is a text of 1 to 64 characters, not ''"),
        ("x" * 65, "h", "a message id is a text of 1 to 64 characters"),
        ("m1", "", "a handler name is a text of 1 to 500 characters, not ''"),
    ],
)
def test_a_claim_with_a_bad_id_or_handler_says_what_is_wrong(
    session_factory: sessionmaker[Session], message_id: str, handler: str, problem: str
) -> None:
    with new_uow(session_factory) as uow, pytest.raises(ValueError, match="^" + problem):
        uow.claim_incoming(message_id, handler)


def test_a_database_other_than_postgresql_or_sqlite_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="supports PostgreSQL and SQLite, not 'mysql'"):
        claim_statement("mysql", INBOX)


# -- concurrent duplicates (PostgreSQL) ---------------------------------------------


def waiting_on_a_lock(engine: sqlalchemy.Engine) -> bool:
    with engine.connect() as connection:
        count = connection.scalar(
            sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
    return bool(count)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("first_ends_with", "second_granted"), [("commit", False), ("rollback", True)]
)
def test_a_concurrent_duplicate_waits_for_the_first_claim_and_then_sees_how_it_ended(
    postgres_database: str, first_ends_with: str, second_granted: bool
) -> None:
    engine = sqlalchemy.create_engine(postgres_database)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    first = new_uow(factory)
    assert first.claim_incoming("m1", "handlers.a")
    outcome: list[bool] = []

    def second() -> None:
        with new_uow(factory) as uow:
            outcome.append(uow.claim_incoming("m1", "handlers.a"))
            uow.commit()

    thread = threading.Thread(target=second)
    thread.start()
    # The second claim is blocked by the first's uncommitted row (PostgreSQL's own
    # view of it): only then does the first transaction end.
    checks = 0
    while not waiting_on_a_lock(engine):
        checks += 1
        assert thread.is_alive(), "the second claim did not wait for the first"
        assert checks < 10_000
    getattr(first, first_ends_with)()
    first.close()
    thread.join()

    assert [second_granted] == outcome
    assert [("m1", "handlers.a")] == handled(engine)
    engine.dispose()


# -- retention ------------------------------------------------------------------------


def test_purge_deletes_the_rows_handled_before_the_retention_period_only(
    engine: sqlalchemy.Engine, session_factory: sessionmaker[Session]
) -> None:
    for message_id in ("old", "new"):
        with new_uow(session_factory) as uow:
            uow.claim_incoming(message_id, "h")
            uow.commit()
    old = _dt.datetime(2020, 1, 1, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(INBOX.update().where(INBOX.c.message_id == "old").values(handled_at=old))

    deleted = purge_inbox(
        engine, older_than=_dt.timedelta(days=7), table=INBOX, now=old + _dt.timedelta(days=8)
    )

    assert 1 == deleted
    assert [("new", "h")] == handled(engine)


def test_purge_on_a_connection_leaves_the_transaction_to_the_caller(
    engine: sqlalchemy.Engine, session_factory: sessionmaker[Session]
) -> None:
    with new_uow(session_factory) as uow:
        uow.claim_incoming("m1", "h")
        uow.commit()
    later = _dt.datetime.now(UTC) + _dt.timedelta(days=30)

    with engine.connect() as connection:
        deleted = purge_inbox(connection, older_than=_dt.timedelta(days=1), table=INBOX, now=later)
        connection.rollback()

    assert 1 == deleted
    assert [("m1", "h")] == handled(engine)


@pytest.mark.parametrize(
    ("older_than", "now", "problem"),
    [
        (_dt.timedelta(days=-1), None, "older_than must not be negative"),
        (_dt.timedelta(days=1), _dt.datetime(2024, 1, 1), "now must be timezone-aware"),
    ],
)
def test_purge_with_a_bad_period_or_time_says_what_is_wrong(
    engine: sqlalchemy.Engine, older_than: _dt.timedelta, now: _dt.datetime | None, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        purge_inbox(engine, older_than=older_than, table=INBOX, now=now)


# -- the async unit of work ---------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def async_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    url = database_url.replace("sqlite:", "sqlite+aiosqlite:")
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


def new_async_uow(engine: AsyncEngine) -> AsyncSqlAlchemyUnitOfWork:
    return AsyncSqlAlchemyUnitOfWork(
        async_sessionmaker(engine, expire_on_commit=False),
        inbox_table=INBOX,
        notes=AsyncSqlAlchemyRepository(Note, key="key"),
    )


@pytest.mark.anyio
async def test_async_claims_are_granted_once_and_commit_with_the_handlers_change(
    async_engine: AsyncEngine,
) -> None:
    async with new_async_uow(async_engine) as uow:
        first = await uow.claim_incoming("m1", "handlers.a")
        uow.notes.add(Note(key="n1", text="from m1"))
        await uow.commit()
    async with new_async_uow(async_engine) as uow:
        again = await uow.claim_incoming("m1", "handlers.a")
        other = await uow.claim_incoming("m1", "handlers.b")
        await uow.rollback()
    async with async_engine.connect() as connection:
        rows = await connection.execute(select(INBOX.c.message_id, INBOX.c.handler))
        kept = [tuple(row) for row in rows]
        kept_notes = list(await connection.scalars(select(Note.key)))

    assert (True, False, True) == (first, again, other)
    assert ([("m1", "handlers.a")], ["n1"]) == (kept, kept_notes)
