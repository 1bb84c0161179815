"""AsyncDeadLetters keeps the promises of DeadLetters, awaited: claims, a letter purged during
a batch, failures recorded; and the import of letters into an async store."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import structlog

from messagebus import AsyncMessageBus, Event, Registry, RetryPolicy
from messagebus.dead_letters import (
    AsyncDeadLetters,
    DeadLetterNotFoundError,
    DeadLetterSpool,
    InMemoryDeadLetterStore,
    import_dead_letters_async,
)
from messagebus.observe import DeadLetter

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


@attrs.frozen
class Shipped(Event):
    order: str


@attrs.define
class Billing:
    working: bool = False
    failing: set[str] = attrs.Factory(set)
    runs: list[str] = attrs.Factory(list)
    during: Callable[[str], Awaitable[Any]] | None = None


def make_bus(store: Any, billing: Billing) -> AsyncMessageBus:
    registry = Registry()

    @registry.register(uow=False)
    async def bill(event: Shipped) -> None:
        if not billing.working or event.order in billing.failing:
            raise ConnectionRefusedError("billing is down")
        billing.runs.append(event.order)
        if billing.during is not None:
            during, billing.during = billing.during, None
            await during(event.order)

    return AsyncMessageBus(
        registry,
        logger=structlog.wrap_logger(structlog.ReturnLogger(), processors=[]),
        dead_letters=store,
        retry=RetryPolicy.no_retries(),
    )


def setup(*orders: str) -> tuple[InMemoryDeadLetterStore, Billing, AsyncMessageBus]:
    store, billing = InMemoryDeadLetterStore(), Billing()
    bus = make_bus(store, billing)

    async def fail() -> None:
        for order in orders:
            await bus.handle(Shipped(order))

    asyncio.run(fail())
    billing.working = True
    return store, billing, bus


def test_two_async_retriers_run_each_handler_once() -> None:
    store, billing, bus = setup("o1", "o2", "o3")
    first = AsyncDeadLetters(store, bus, clock=lambda: NOW)
    second = AsyncDeadLetters(store, bus, clock=lambda: NOW)
    others: list[Any] = []

    async def run_second(_: str) -> None:
        others.extend(await second.retry_all())

    billing.during = run_second
    mine = asyncio.run(first.retry_all())

    assert ["o1", "o2", "o3"] == sorted(billing.runs)
    assert ["resolved", "already_resolved", "already_resolved"] == [r.outcome for r in mine]
    assert ["skipped", "resolved", "resolved"] == [r.outcome for r in others]


def test_letters_purged_before_or_during_their_async_retry_are_noted() -> None:
    store, billing, bus = setup("o1", "o2", "o3", "o4")
    letters = AsyncDeadLetters(store, bus, clock=lambda: NOW)
    ids = [stored.id for stored in store.list()]
    billing.failing = {"o4"}

    async def purge(_: str) -> None:
        await letters.purge([ids[0], ids[1]])

    billing.during = purge
    results = asyncio.run(letters.retry_all())

    assert [
        ("resolved", "purged while it was retried"),
        ("skipped", "purged before it was retried"),
        ("resolved", None),
        ("failed", None),
    ] == [(r.outcome, r.note) for r in results]


def test_an_async_retry_that_fails_on_a_purged_letter_is_reported() -> None:
    store, billing, bus = setup("o1")
    letters = AsyncDeadLetters(store, bus, clock=lambda: NOW)
    billing.failing = {"o1"}
    mark = store.mark_retry_failed

    def gone(letter_id: int, **kwargs: Any) -> None:
        store.purge(ids=[letter_id])
        mark(letter_id, **kwargs)

    store.mark_retry_failed = gone  # type: ignore[method-assign]
    (result,) = asyncio.run(letters.retry_all())

    assert ("failed", "purged while it was retried") == (result.outcome, result.note)


def test_an_async_retry_of_a_letter_the_bus_cannot_build_fails_and_stays() -> None:
    store, _, bus = setup()
    store.add(DeadLetter("Gone", 1, {}, {}, "h", "E: x", "", 1, NOW))
    letters = AsyncDeadLetters(store, bus, clock=lambda: NOW)

    (result,) = asyncio.run(letters.retry_all())

    assert "failed" == result.outcome
    assert "UnknownMessageError" in (result.error or "")
    with pytest.raises(DeadLetterNotFoundError):
        asyncio.run(letters.show(99))


def test_spooled_letters_are_imported_into_an_async_store_once(tmp_path: Any) -> None:
    letter = DeadLetter("Shipped", 1, {"order": "o1"}, {}, "h", "E: x", "tb", 2, NOW)
    spool = DeadLetterSpool(tmp_path / "spool")
    spool.append(letter)
    store = InMemoryDeadLetterStore()

    class AsyncStore:
        async def add(self, letter: DeadLetter) -> None:
            store.add(letter)

        async def contains(self, letter: DeadLetter) -> bool:
            return store.contains(letter)

    first = asyncio.run(import_dead_letters_async(AsyncStore(), spool.path))
    again = asyncio.run(import_dead_letters_async(AsyncStore(), spool.path))

    assert (1, 0) == (first.imported, first.already_stored)
    assert (0, 1) == (again.imported, again.already_stored)
    assert [letter] == [stored.letter for stored in store.list()]
    assert f"DeadLetterSpool({spool.path!r})" == repr(spool)
