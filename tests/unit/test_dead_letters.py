"""messagebus.dead_letters (DESIGN.md §7): handlings given up on are kept, listed,
retried (one, by type, all) and resolved; nothing is deleted except by purge.

Every store test runs on the in-memory store and on the SQLAlchemy store over SQLite
(tests/integration/test_dead_letters_postgres.py runs them on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import create_async_engine

from messagebus import AsyncMessageBus, Command, Context, Event, MessageBus, Metadata, Registry
from messagebus.dead_letters import (
    AsyncDeadLetters,
    DeadLetterNotFoundError,
    DeadLetters,
    InMemoryDeadLetterStore,
    ManagedDeadLetterStore,
    RetryResult,
    StoredDeadLetter,
)
from messagebus.observe import DeadLetter, DeadLetterStore, InMemoryDeadLetters
from messagebus.sqlalchemy._dead_letters import (
    AsyncSqlAlchemyDeadLetterStore,
    SqlAlchemyDeadLetterStore,
    dead_letter_table,
)

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


@attrs.frozen
class Ship(Command[None]):
    order: str


@attrs.frozen
class Shipped(Event):
    order: str


@attrs.frozen
class Invoiced(Event):
    order: str


@attrs.frozen
class Thanked(Event):
    order: str


class Outage(Exception):
    pass


@attrs.define
class Shop:
    """The application: which handlers are broken, and what each one did."""

    broken: set[str] = attrs.Factory(set)
    done: list[tuple[str, str, Metadata]] = attrs.Factory(list)

    def act(self, handler: str, order: str, metadata: Metadata) -> None:
        if handler in self.broken:
            raise Outage(f"{handler} is down")
        self.done.append((handler, order, metadata))

    def did(self, handler: str) -> list[str]:
        return [order for h, order, _ in self.done if h == handler]


def quiet() -> Any:
    return structlog.wrap_logger(structlog.ReturnLogger(), processors=[])


def registry(shop: Shop) -> Registry:
    registry = Registry()

    @registry.register(uow=False)
    def ship(command: Ship, context: Context, metadata: Metadata) -> None:
        shop.act("ship", command.order, metadata)
        context.emit(Shipped(command.order))

    @registry.register(uow=False)
    def invoice(event: Shipped, context: Context, metadata: Metadata) -> None:
        shop.act("invoice", event.order, metadata)
        context.emit(Invoiced(event.order))

    @registry.register(uow=False)
    def email(event: Shipped, metadata: Metadata) -> None:
        shop.act("email", event.order, metadata)

    @registry.register(uow=False)
    def thank(event: Invoiced, metadata: Metadata) -> None:
        shop.act("thank", event.order, metadata)

    return registry


def handler_name(name: str) -> str:
    return f"{__name__}.registry.<locals>.{name}"


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ManagedDeadLetterStore]:
    if request.param == "memory":
        yield InMemoryDeadLetterStore()
        return
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    sql = SqlAlchemyDeadLetterStore(engine)
    sql.create_table()
    yield sql
    engine.dispose()


@attrs.define
class World:
    shop: Shop
    store: ManagedDeadLetterStore
    bus: MessageBus
    letters: DeadLetters


@pytest.fixture
def world(store: ManagedDeadLetterStore) -> World:
    shop = Shop()
    bus = MessageBus(registry(shop), logger=quiet(), dead_letters=store, dead_letter_commands=True)
    return World(shop, store, bus, DeadLetters(store, bus, clock=lambda: NOW))


def ship(world: World, *orders: str, broken: frozenset[str] | set[str] = frozenset()) -> None:
    """Ship orders while some handlers are broken; mend them afterwards."""
    world.shop.broken = set(broken)
    for order in orders:
        with contextlib.suppress(Outage):
            world.bus.handle(Ship(order))
    world.shop.broken = set()


# -- kept ---------------------------------------------------------------------------


def test_a_failed_event_handling_is_kept_pending_with_all_there_is_to_know(world: World) -> None:
    ship(world, "o1", broken={"email"})

    (stored,) = world.letters.list()

    assert isinstance(stored, StoredDeadLetter)
    assert "pending" == stored.status
    assert not stored.resolved
    assert 0 == stored.retries
    letter = stored.letter
    assert ("Shipped", 1, {"order": "o1"}) == (
        letter.message_name,
        letter.message_version,
        letter.payload,
    )
    assert handler_name("email") == letter.handler
    assert "Outage: email is down" == letter.error
    assert "Traceback (most recent call last)" in letter.traceback
    assert 1 == letter.attempts
    assert letter.failed_at.tzinfo is not None
    (_, _, shipped) = world.shop.done[1]  # invoice saw the same Shipped
    assert str(shipped.message_id) == stored.message_id == letter.metadata["message_id"]


def test_a_failed_command_is_kept_when_the_application_asks(world: World) -> None:
    ship(world, "o1", broken={"ship"})

    (stored,) = world.letters.list()

    assert ("Ship", handler_name("ship")) == (stored.letter.message_name, stored.letter.handler)


def test_letters_are_listed_oldest_first_and_filtered(world: World) -> None:
    ship(world, "o1", broken={"email"})
    ship(world, "o2", broken={"invoice"})
    ship(world, "o3", broken={"email"})

    everything = world.letters.list()
    assert [s.id for s in everything] == sorted(s.id for s in everything)
    assert [{"order": "o1"}, {"order": "o2"}, {"order": "o3"}] == [
        s.letter.payload for s in everything
    ]
    by_handler = world.letters.list(handler=handler_name("email"))
    assert [{"order": "o1"}, {"order": "o3"}] == [s.letter.payload for s in by_handler]
    assert 2 == len(world.letters.list(limit=2))
    assert [] == world.letters.list(message_name="Invoiced")
    assert 3 == len(world.letters.list(message_name="Shipped"))


def test_show_gives_one_letter_and_an_unknown_id_is_an_error(world: World) -> None:
    ship(world, "o1", broken={"email"})
    (listed,) = world.letters.list()

    assert listed == world.letters.show(listed.id)
    with pytest.raises(DeadLetterNotFoundError, match="12345") as caught:
        world.letters.show(12345)
    assert 12345 == caught.value.letter_id
    assert isinstance(caught.value, LookupError)


# -- retried ------------------------------------------------------------------------


def test_a_handler_fixed_since_succeeds_on_retry_and_the_letter_is_resolved(world: World) -> None:
    ship(world, "o1", broken={"email"})
    (stored,) = world.letters.list()

    result = world.letters.retry(stored.id)

    assert RetryResult(stored.id, "resolved") == result
    assert result.ok
    assert ["o1"] == world.shop.did("email")
    assert [] == world.letters.list()
    (resolved,) = world.letters.list(resolved=True)
    assert (stored.id, NOW, NOW, 1) == (
        resolved.id,
        resolved.resolved_at,
        resolved.last_retried_at,
        resolved.retries,
    )
    assert stored.letter == resolved.letter  # kept, as it was


def test_a_retry_runs_only_the_handler_that_failed_with_the_original_metadata(
    world: World,
) -> None:
    ship(world, "o1", broken={"invoice"})
    (stored,) = world.letters.list()
    before = list(world.shop.done)

    world.letters.retry(stored.id)

    (_, _, original), (_, _, retried) = before[1], world.shop.done[len(before)]
    assert ["o1"] == world.shop.did("email")  # not run again
    assert ["o1"] == world.shop.did("invoice")
    assert original == retried  # email saw Shipped with these ids; invoice sees the same
    assert ["o1"] == world.shop.did("thank")  # the events it raises are dispatched


def test_a_retry_that_fails_again_keeps_the_letter_pending_and_records_why(
    world: World,
) -> None:
    ship(world, "o1", broken={"email"})
    (stored,) = world.letters.list()
    world.shop.broken = {"email"}

    result = world.letters.retry(stored.id)

    assert ("failed", "Outage: email is down") == (result.outcome, result.error)
    assert not result.ok
    (again,) = world.letters.list()  # no second letter
    assert (stored.id, 1, NOW, "Outage: email is down") == (
        again.id,
        again.retries,
        again.last_retried_at,
        again.last_error,
    )
    assert "Outage" in (again.last_traceback or "")
    assert stored.letter == again.letter


def test_retry_by_type_retries_the_pending_letters_of_one_message(world: World) -> None:
    ship(world, "o1", broken={"ship"})
    ship(world, "o2", broken={"email"})
    ship(world, "o3", broken={"email"})

    results = world.letters.retry_type("Shipped")

    assert ["resolved", "resolved"] == [r.outcome for r in results]
    assert ["o2", "o3"] == world.shop.did("email")
    assert ["Ship"] == [s.letter.message_name for s in world.letters.list()]


def test_retry_all_retries_every_pending_letter_once(world: World) -> None:
    ship(world, "o1", broken={"ship"})
    ship(world, "o2", broken={"email", "invoice"})
    world.shop.broken = {"invoice"}

    results = world.letters.retry_all()

    # Ship o1, then invoice o2 (still broken), then email o2.
    assert ["resolved", "failed", "resolved"] == [r.outcome for r in results]
    assert ["o1", "o2"] == world.shop.did("email")  # o1: raised by the retried ship
    # Invoicing o1, raised by the retried ship, failed too: a new letter, left for next time.
    pending = world.letters.list()
    assert [("o2", 1), ("o1", 0)] == [(s.letter.payload["order"], s.retries) for s in pending]
    assert 2 == len(world.letters.list(resolved=True))


def test_a_resolved_letter_is_not_retried_again(world: World) -> None:
    ship(world, "o1", broken={"email"})
    (stored,) = world.letters.list()
    world.letters.retry(stored.id)

    assert RetryResult(stored.id, "already_resolved") == world.letters.retry(stored.id)
    assert [] == world.letters.retry_all()
    assert ["o1"] == world.shop.did("email")
    assert 1 == world.letters.show(stored.id).retries


def test_retrying_an_unknown_id_is_an_error(world: World) -> None:
    with pytest.raises(DeadLetterNotFoundError):
        world.letters.retry(999)


def test_a_letter_the_bus_can_no_longer_build_or_deliver_fails_and_stays(
    world: World,
) -> None:
    stored_at = NOW - dt.timedelta(days=1)
    metadata = world.bus.serializer.dump_metadata(Metadata.new())
    gone = DeadLetter("Renamed", 1, {}, metadata, handler_name("email"), "E: x", "tb", 3, stored_at)
    changed = attrs.evolve(gone, message_name="Shipped", payload={"order": 5})
    orphan = attrs.evolve(gone, message_name="Shipped", payload={"order": "o9"}, handler="old.fn")
    for letter in (gone, changed, orphan):
        world.store.add(letter)

    results = world.letters.retry_all()

    assert ["failed", "failed", "failed"] == [r.outcome for r in results]
    errors = [r.error or "" for r in results]
    assert errors[0].startswith("UnknownMessageError")
    assert errors[1].startswith("InvalidMessageDataError")
    assert "Shipped.order" in errors[1]
    assert errors[2].startswith("DispatchError")
    assert "old.fn" in errors[2]
    assert [1, 1, 1] == [s.retries for s in world.letters.list()]


# -- purged -------------------------------------------------------------------------


def test_nothing_is_deleted_except_by_purge_and_purge_wants_a_filter(world: World) -> None:
    ship(world, "o1", broken={"email"})
    ship(world, "o2", broken={"ship"})
    world.letters.retry_all()

    assert 2 == len(world.letters.list(resolved=None))
    with pytest.raises(ValueError, match="everything=True"):
        world.letters.purge()
    assert 2 == len(world.letters.list(resolved=None))


def test_purge_deletes_what_matches_every_filter(world: World) -> None:
    ship(world, "o1", broken={"email"})
    ship(world, "o2", broken={"email"})
    ship(world, "o3", broken={"ship"})
    ship(world, "o4", broken={"email"})
    first, second, third, fourth = world.letters.list()
    world.letters.retry(first.id)
    world.letters.retry(third.id)

    assert 1 == world.letters.purge(message_name="Shipped", resolved=True)
    assert [second.id, third.id, fourth.id] == [s.id for s in world.letters.list(resolved=None)]
    assert 1 == world.letters.purge([second.id, third.id], resolved=False)
    assert [third.id, fourth.id] == [s.id for s in world.letters.list(resolved=None)]
    assert 1 == world.letters.purge(resolved=True)
    assert 0 == world.letters.purge([12345])
    assert 1 == world.letters.purge(everything=True)
    assert [] == world.letters.list(resolved=None)


# -- the API and its stores ---------------------------------------------------------


def test_managed_stores_are_dead_letter_stores_for_the_bus(store: ManagedDeadLetterStore) -> None:
    assert isinstance(store, ManagedDeadLetterStore)
    assert isinstance(store, DeadLetterStore)


def test_marking_an_unknown_letter_is_an_error(store: ManagedDeadLetterStore) -> None:
    with pytest.raises(DeadLetterNotFoundError):
        store.mark_resolved(404, at=NOW)
    with pytest.raises(DeadLetterNotFoundError):
        store.mark_retry_failed(404, error="E", traceback="tb", at=NOW)


def test_a_store_that_cannot_list_is_refused() -> None:
    bus = MessageBus(registry(Shop()))
    with pytest.raises(TypeError, match="not a managed dead-letter store"):
        DeadLetters(InMemoryDeadLetters(), bus)  # type: ignore[arg-type]


def test_each_api_takes_its_own_kind_of_bus() -> None:
    sync_bus = MessageBus(registry(Shop()))
    with pytest.raises(TypeError, match="MessageBus"):
        DeadLetters(InMemoryDeadLetterStore(), AsyncMessageBus(Registry()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncMessageBus"):
        AsyncDeadLetters(InMemoryDeadLetterStore(), sync_bus)  # type: ignore[arg-type]


def test_the_sqlalchemy_store_keeps_times_in_utc(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    store = SqlAlchemyDeadLetterStore(engine)
    store.create_table()
    store.create_table()  # idempotent
    paris = dt.timezone(dt.timedelta(hours=2))
    failed_at = dt.datetime(2024, 5, 1, 14, 0, tzinfo=paris)
    store.add(DeadLetter("Shipped", 1, {"order": "o1"}, {}, "h", "E: x", "tb", 2, failed_at))

    (stored,) = store.list()
    store.mark_resolved(stored.id, at=failed_at + dt.timedelta(hours=1))
    resolved = store.get(stored.id)

    assert resolved is not None
    assert dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc) == stored.letter.failed_at
    assert dt.timezone.utc == stored.letter.failed_at.tzinfo
    assert dt.datetime(2024, 5, 1, 13, 0, tzinfo=dt.timezone.utc) == resolved.resolved_at
    assert None is stored.message_id
    assert None is store.get(stored.id + 1)
    engine.dispose()


def test_the_table_can_live_in_the_applications_metadata(tmp_path: Path) -> None:
    metadata = sa.MetaData()
    sa.Table("orders", metadata, sa.Column("id", sa.Integer, primary_key=True))
    table = dead_letter_table(metadata, name="failed_handlings")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    metadata.create_all(engine)  # with the application's own tables

    store = SqlAlchemyDeadLetterStore(engine, table=table)
    store.add(DeadLetter("Shipped", 1, {"order": "o1"}, {}, "h", "E: x", "tb", 1, NOW))

    assert {"orders", "failed_handlings"} == set(sa.inspect(engine).get_table_names())
    assert ["Shipped"] == [s.letter.message_name for s in store.list()]
    assert "failed_handlings" in repr(store)
    engine.dispose()


def test_the_sqlalchemy_store_refuses_a_naive_time(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    store = SqlAlchemyDeadLetterStore(engine)
    store.create_table()
    letter = DeadLetter("S", 1, {}, {}, "h", "E", "tb", 1, NOW)
    store.add(letter)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.mark_resolved(1, at=dt.datetime(2024, 5, 1))
    engine.dispose()


# -- the async bus ------------------------------------------------------------------


def async_bus(shop: Shop, store: ManagedDeadLetterStore) -> AsyncMessageBus:
    registry = Registry()

    @registry.register(uow=False)
    async def ship(command: Ship, context: Context) -> None:
        context.emit(Shipped(command.order))

    @registry.register(uow=False)
    async def email(event: Shipped, metadata: Metadata) -> None:
        shop.act("email", event.order, metadata)

    return AsyncMessageBus(registry, logger=quiet(), dead_letters=store)


def test_an_async_bus_retries_its_letters_awaited(store: ManagedDeadLetterStore) -> None:
    shop = Shop(broken={"email"})

    async def scenario() -> tuple[list[RetryResult], list[RetryResult], RetryResult]:
        # The async bus takes a store that does not block its event loop.
        async_store: Any = store
        if isinstance(store, SqlAlchemyDeadLetterStore):
            url = store.engine.url.set(drivername="sqlite+aiosqlite")
            async_store = AsyncSqlAlchemyDeadLetterStore(create_async_engine(url))
        try:
            return await run(AsyncDeadLetters(async_store, async_bus(shop, async_store)))
        finally:
            if isinstance(async_store, AsyncSqlAlchemyDeadLetterStore):
                await async_store.engine.dispose()

    async def run(
        letters: AsyncDeadLetters,
    ) -> tuple[list[RetryResult], list[RetryResult], RetryResult]:
        bus: Any = letters.bus
        for order in ("o1", "o2", "o3"):
            await bus.handle(Ship(order))
        first = await letters.retry_type("Shipped")  # still broken
        shop.broken = set()
        (pending, *_) = await letters.list()
        one = await letters.retry(pending.id)
        rest = await letters.retry_all()
        assert "already_resolved" == (await letters.retry(pending.id)).outcome
        assert [2, 2, 2] == [s.retries for s in await letters.list(resolved=True)]
        return first, rest, one

    first, rest, one = asyncio.run(scenario())

    assert ["failed"] * 3 == [r.outcome for r in first]
    assert "resolved" == one.outcome
    assert ["resolved", "resolved"] == [r.outcome for r in rest]
    assert ["o1", "o2", "o3"] == shop.did("email")


# -- what a store shows -------------------------------------------------------------


def test_the_in_memory_stores_show_how_many_letters_they_hold() -> None:
    store, plain = InMemoryDeadLetterStore(), InMemoryDeadLetters()
    assert "<InMemoryDeadLetterStore letters=0 pending=0>" == repr(store)
    assert "<InMemoryDeadLetters letters=0>" == repr(plain)
    shop = Shop()
    bus = MessageBus(registry(shop), logger=quiet(), dead_letters=store)
    world = World(shop, store, bus, DeadLetters(store, bus, clock=lambda: NOW))
    ship(world, "o1", "o2", broken={"email"})
    world.letters.retry(1)
    for stored in store.list(resolved=None):
        plain.add(stored.letter)

    assert "<InMemoryDeadLetterStore letters=2 pending=1>" == repr(store)
    assert "<InMemoryDeadLetters letters=2>" == repr(plain)
