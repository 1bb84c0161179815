"""Dead letters on the async bus: an AsyncSession store that the event loop awaits, on
aiosqlite and PostgreSQL (psycopg 3, async); and the check that refuses a blocking store
for an async bus, naming it. Tests are coroutines, run by anyio's plugin on asyncio."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import create_async_engine

from messagebus import AsyncMessageBus, ConfigurationError, Event, Registry, RetryPolicy
from messagebus.dead_letters import (
    AsyncDeadLetters,
    DeadLetterNotFoundError,
    InMemoryDeadLetterStore,
)
from messagebus.observe import DeadLetter, InMemoryDeadLetters, check_store_for_async
from messagebus.sqlalchemy._dead_letters import (
    AsyncSqlAlchemyDeadLetterStore,
    SqlAlchemyDeadLetterStore,
)

pytestmark = pytest.mark.anyio

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@attrs.frozen
class Shipped(Event):
    order: str


def quiet() -> Any:
    return structlog.wrap_logger(structlog.ReturnLogger(), processors=[])


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncSqlAlchemyDeadLetterStore]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    else:
        url = request.getfixturevalue("postgres_database")  # postgresql+psycopg: async too
    engine = create_async_engine(url)
    store = AsyncSqlAlchemyDeadLetterStore(engine)
    await store.create_table()
    yield store
    await engine.dispose()


@attrs.define
class Billing:
    working: bool = False
    runs: list[str] = attrs.Factory(list)


def make_bus(store: Any, billing: Billing) -> AsyncMessageBus:
    registry = Registry()

    @registry.register(uow=False)
    async def bill(event: Shipped) -> None:
        await asyncio.sleep(0)  # let the other tasks in
        if not billing.working:
            raise ConnectionRefusedError("billing is down")
        billing.runs.append(event.order)

    return AsyncMessageBus(
        registry, logger=quiet(), dead_letters=store, retry=RetryPolicy.no_retries()
    )


async def test_letters_of_many_tasks_at_once_are_all_in_the_table(
    store: AsyncSqlAlchemyDeadLetterStore,
) -> None:
    billing = Billing()
    bus = make_bus(store, billing)
    orders = [f"o{n:02}" for n in range(40)]

    await asyncio.gather(*(bus.handle(Shipped(order)) for order in orders))

    stored = await store.list()
    assert orders == sorted(s.letter.payload["order"] for s in stored)
    assert {"ConnectionRefusedError: billing is down"} == {s.letter.error for s in stored}


async def test_the_async_store_retries_its_letters_once_each_from_two_retriers(
    store: AsyncSqlAlchemyDeadLetterStore,
) -> None:
    billing = Billing()
    bus = make_bus(store, billing)
    for order in ("o1", "o2", "o3"):
        await bus.handle(Shipped(order))
    billing.working = True

    first, second = AsyncDeadLetters(store, bus), AsyncDeadLetters(store, bus)
    results = await asyncio.gather(first.retry_all(), second.retry_all())

    assert ["o1", "o2", "o3"] == sorted(billing.runs)
    outcomes = sorted(r.outcome for batch in results for r in batch)
    assert 3 == outcomes.count("resolved")
    assert 3 == len(await first.list(resolved=True))
    assert [] == await first.list()


async def test_the_async_store_shows_purges_and_knows_its_letters(
    store: AsyncSqlAlchemyDeadLetterStore,
) -> None:
    billing = Billing()
    bus = make_bus(store, billing)
    await bus.handle(Shipped("o1"))
    letters = AsyncDeadLetters(store, bus)
    (stored,) = await letters.list()

    shown = await letters.show(stored.id)
    known = await store.contains(stored.letter)
    purged = await letters.purge([stored.id])

    assert ("o1", True, 1) == (shown.letter.payload["order"], known, purged)
    assert [] == await letters.list(resolved=None)


# -- a blocking store is refused ------------------------------------------------------


def test_a_sqlalchemy_store_is_refused_for_an_async_bus_by_name(tmp_path: Path) -> None:
    store = SqlAlchemyDeadLetterStore(sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}"))

    with pytest.raises(ConfigurationError) as caught:
        check_store_for_async(store)

    assert "SqlAlchemyDeadLetterStore.add() blocks the event loop" in str(caught.value)
    assert "AsyncSqlAlchemyDeadLetterStore" in str(caught.value)


def test_a_store_with_a_plain_add_that_says_nothing_is_refused() -> None:
    class Mine:
        def add(self, letter: DeadLetter) -> None:
            pass

    with pytest.raises(ConfigurationError, match=r"Mine\.add"):
        check_store_for_async(Mine())


def test_async_and_in_memory_stores_are_accepted(tmp_path: Path) -> None:
    class Mine:
        async def add(self, letter: DeadLetter) -> None:
            pass

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    for store in (
        Mine(),
        AsyncSqlAlchemyDeadLetterStore(engine),
        InMemoryDeadLetters(),
        InMemoryDeadLetterStore(),
    ):
        check_store_for_async(store)


def test_a_store_without_add_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no add"):
        check_store_for_async(object())


async def test_an_async_store_write_that_fails_transiently_is_retried(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    failing = [2]

    @sa.event.listens_for(engine.sync_engine, "before_cursor_execute")
    def outage(*args: Any) -> None:
        if args[2].startswith("INSERT") and failing[0]:
            failing[0] -= 1
            raise sa.exc.OperationalError(args[2], None, Exception("database is locked"))

    async def no_wait(_: float) -> None:
        pass

    store = AsyncSqlAlchemyDeadLetterStore(engine, sleep=no_wait)
    await store.create_table()
    letter = DeadLetter("Shipped", 1, {"order": "o1"}, {}, "h", "E: x", "", 1, NOW)

    await store.add(letter)

    assert [letter] == [s.letter for s in await store.list()]
    await engine.dispose()


async def test_the_async_store_releases_claims_and_refuses_unknown_letters(
    store: AsyncSqlAlchemyDeadLetterStore,
) -> None:
    letter = DeadLetter("Shipped", 1, {"order": "o1"}, {}, "h", "E: x", "", 1, NOW)
    await store.add(letter)
    (stored,) = await store.list()
    later = NOW + dt.timedelta(minutes=5)

    mine = await store.claim(stored.id, owner="a", now=NOW, until=later)
    theirs = await store.claim(stored.id, owner="b", now=NOW, until=later)
    await store.release(stored.id, owner="a")
    again = await store.claim(stored.id, owner="b", now=NOW, until=later)
    await store.mark_retry_failed(stored.id, error="E: y", traceback="", at=NOW)

    assert (True, None, True) == (mine is not None, theirs, again is not None)
    assert "E: y" == (await store.get(stored.id) or stored).last_error
    with pytest.raises(DeadLetterNotFoundError):
        await store.mark_resolved(999, at=NOW)
    with pytest.raises(DeadLetterNotFoundError):
        await store.claim(999, owner="a", now=NOW, until=later)
    assert "AsyncSqlAlchemyDeadLetterStore(" in repr(store)


async def test_an_async_store_without_a_spool_raises_when_it_cannot_write(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")

    async def no_wait(_: float) -> None:
        pass

    store = AsyncSqlAlchemyDeadLetterStore(engine, sleep=no_wait)  # no table: every write fails
    letter = DeadLetter("Shipped", 1, {"order": "o1"}, {}, "h", "E: x", "", 1, NOW)

    with pytest.raises(sa.exc.OperationalError):
        await store.add(letter)
    await engine.dispose()
