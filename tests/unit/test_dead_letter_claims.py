"""Concurrent retries of the same dead letters: each letter is claimed by one retrier, its
handler runs once; a letter purged during a batch is skipped with a note, and the batch
goes on. On the in-memory store and on SQLite (PostgreSQL: tests/integration)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
import structlog

from messagebus import Event, MessageBus, Registry
from messagebus.dead_letters import DeadLetters, InMemoryDeadLetterStore, ManagedDeadLetterStore
from messagebus.sqlalchemy._dead_letters import SqlAlchemyDeadLetterStore

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


@attrs.frozen
class Shipped(Event):
    order: str


def quiet() -> Any:
    return structlog.wrap_logger(structlog.ReturnLogger(), processors=[])


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
class Billing:
    working: bool = False
    runs: list[str] = attrs.Factory(list)
    during: Callable[[str], None] | None = None


def make_bus(store: ManagedDeadLetterStore, billing: Billing) -> MessageBus:
    registry = Registry()

    @registry.register(uow=False)
    def bill(event: Shipped) -> None:
        if not billing.working:
            raise ConnectionRefusedError("billing is down")
        billing.runs.append(event.order)
        if billing.during is not None:
            during, billing.during = billing.during, None  # once
            during(event.order)

    return MessageBus(registry, logger=quiet(), dead_letters=store)


def fail(bus: MessageBus, billing: Billing, *orders: str) -> None:
    for order in orders:
        bus.handle(Shipped(order))
    billing.working = True


def test_two_retry_alls_at_once_run_each_handler_once(store: ManagedDeadLetterStore) -> None:
    billing = Billing()
    bus = make_bus(store, billing)
    fail(bus, billing, "o1", "o2", "o3", "o4")
    first = DeadLetters(store, bus, clock=lambda: NOW)
    second = DeadLetters(store, bus, clock=lambda: NOW)
    others: list[Any] = []
    # The second retrier runs its whole batch while the first is retrying its first letter.
    billing.during = lambda _: others.extend(second.retry_all())

    mine = first.retry_all()

    assert ["o1", "o2", "o3", "o4"] == sorted(billing.runs)
    assert ["resolved", "already_resolved", "already_resolved", "already_resolved"] == [
        result.outcome for result in mine
    ]
    assert ["skipped", "resolved", "resolved", "resolved"] == [r.outcome for r in others]
    assert "another retrier is retrying it" == others[0].note
    assert 4 == len(store.list(resolved=True))


def test_a_letter_purged_during_retry_all_is_skipped_with_a_note_and_the_batch_goes_on(
    store: ManagedDeadLetterStore,
) -> None:
    billing = Billing()
    bus = make_bus(store, billing)
    fail(bus, billing, "o1", "o2", "o3")
    letters = DeadLetters(store, bus, clock=lambda: NOW)
    ids = [stored.id for stored in store.list()]
    billing.during = lambda _: letters.purge([ids[1]])

    results = letters.retry_all()

    assert [
        (ids[0], "resolved", None),
        (ids[1], "skipped", "purged before it was retried"),
        (ids[2], "resolved", None),
    ] == [(r.letter_id, r.outcome, r.note) for r in results]
    assert ["o1", "o3"] == billing.runs


def test_a_letter_purged_while_its_handler_runs_is_reported_and_the_batch_goes_on(
    store: ManagedDeadLetterStore,
) -> None:
    billing = Billing()
    bus = make_bus(store, billing)
    fail(bus, billing, "o1", "o2")
    letters = DeadLetters(store, bus, clock=lambda: NOW)
    first = store.list()[0].id
    billing.during = lambda _: letters.purge([first])

    results = letters.retry_all()

    assert ["purged while it was retried", None] == [r.note for r in results]
    assert ["o1", "o2"] == billing.runs


def test_a_claim_that_outlived_its_lease_can_be_taken_again(
    store: ManagedDeadLetterStore,
) -> None:
    billing = Billing()
    bus = make_bus(store, billing)
    fail(bus, billing, "o1")
    (stored,) = store.list()
    claim: Any = store.claim  # type: ignore[attr-defined]
    assert claim(stored.id, owner="crashed", now=NOW, until=NOW + dt.timedelta(minutes=5))

    early = DeadLetters(store, bus, clock=lambda: NOW + dt.timedelta(minutes=1)).retry_all()
    late = DeadLetters(store, bus, clock=lambda: NOW + dt.timedelta(minutes=6)).retry_all()

    assert ["skipped"] == [r.outcome for r in early]
    assert ["resolved"] == [r.outcome for r in late]
    assert ["o1"] == billing.runs
