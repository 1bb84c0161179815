"""DESIGN.md §4, Unit of work: one per handler attempt, and events only after commit.

Every test of a bus runs against both (the ``h`` fixture); the tests of
``AbstractUnitOfWork`` and the fakes on their own, at the end, involve no bus.
"""

import asyncio
import inspect
import typing

import attrs
import pytest
from structlog.typing import EventDict

from messagebus import AbstractAsyncUnitOfWork, AbstractUnitOfWork, Command, Context, Event

from ._buses import Harness

A = typing.TypeVar("A")


@attrs.frozen
class Allocate(Command[str]):
    sku: str


@attrs.frozen
class Allocated(Event):
    sku: str
    attempt: int = 1


@attrs.frozen
class Noted(Event):
    sku: str


@attrs.define
class Product:
    sku: str
    events: list[Event] = attrs.field(factory=list)


class Counted:
    """An aggregate that counts its allocations (the fake repository keeps copies)."""

    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.allocations = 0
        self.events: list[Event] = []


class Journal:
    """A factory of units of work that writes down what happens to each one.

    Entries are ``(number of the unit of work, what happened)``; the units of
    work are numbered from 1 in the order they are made. They are of the kind
    of the bus given (``"sync"`` or ``"async"``), and write down the same.
    """

    def __init__(
        self,
        kind: str = "sync",
        *,
        commit_errors: list[Exception] | None = None,
        rollback_error: Exception | None = None,
        close_error: Exception | None = None,
    ) -> None:
        self.kind = kind
        self.entries: list[tuple[int, str]] = []
        self.made: list[Journaling] = []
        self.commit_errors = commit_errors or []
        self.rollback_error = rollback_error
        self.close_error = close_error

    def __call__(self) -> typing.Any:
        uow_type = AsyncJournalingUnitOfWork if self.kind == "async" else JournalingUnitOfWork
        self.made.append(uow_type(self, len(self.made) + 1))
        return self.made[-1]


class Journaling:
    """What a journaling unit of work of either kind does, and writes down."""

    def __init__(self, journal: Journal, number: int) -> None:
        super().__init__()
        self.journal = journal
        self.number = number

    def _note(self, what: str) -> None:
        self.journal.entries.append((self.number, what))

    def _commit_now(self) -> None:
        self._note("commit")
        if self.journal.commit_errors:
            raise self.journal.commit_errors.pop(0)

    def _rollback_now(self) -> None:
        self._note("rollback")
        if self.journal.rollback_error is not None:
            raise self.journal.rollback_error

    def _close_now(self) -> None:
        self._note("close")
        if self.journal.close_error is not None:
            raise self.journal.close_error

    def collect_new_events(self) -> list[Event]:
        self._note("collect")
        return super().collect_new_events()  # type: ignore[misc, no-any-return]

    def track(self, aggregate: A) -> A:
        return super().track(aggregate)  # type: ignore[misc, no-any-return]


class JournalingUnitOfWork(Journaling, AbstractUnitOfWork):
    def _commit(self) -> None:
        self._commit_now()

    def _rollback(self) -> None:
        self._rollback_now()

    def close(self) -> None:
        self._close_now()


class AsyncJournalingUnitOfWork(Journaling, AbstractAsyncUnitOfWork):
    async def _commit(self) -> None:
        self._commit_now()

    async def _rollback(self) -> None:
        self._rollback_now()

    async def close(self) -> None:
        self._close_now()


def recording_handlers(h: Harness, handled: list[Event]) -> None:
    @h.register(uow=False)
    def record(event: Allocated) -> None:
        handled.append(event)

    @h.register(uow=False)
    def note(event: Noted) -> None:
        handled.append(event)


# -- one unit of work per attempt -------------------------------------------------


def test_each_handler_attempt_runs_in_a_fresh_unit_of_work(h: Harness, logger: object) -> None:
    journal = Journal(h.kind)
    received: list[object] = []

    @h.register
    def allocate(cmd: Allocate, uow: Journaling) -> str:
        received.append(uow)
        if len(received) < 3:
            raise TimeoutError("database busy")
        return "done"

    h.build(logger=logger, uow=journal)
    h.handle(Allocate("lamp"))

    assert 3 == len(journal.made)
    assert journal.made == received
    assert 3 == len({id(uow) for uow in received})


def test_each_event_handler_runs_in_its_own_unit_of_work(h: Harness) -> None:
    journal = Journal(h.kind)
    received: list[object] = []

    @h.register
    def record(event: Allocated, uow: Journaling) -> None:
        received.append(uow)

    @h.register
    def notify(event: Allocated, uow: Journaling) -> None:
        received.append(uow)

    h.build(uow=journal)
    h.handle(Allocated("lamp"))

    assert journal.made == received
    assert [(1, "commit"), (1, "collect"), (1, "close")] == journal.entries[:3]
    assert [(2, "commit"), (2, "collect"), (2, "close")] == journal.entries[3:]


def test_unit_of_work_is_committed_and_closed_when_the_handler_succeeds(
    h: Harness, logger: object
) -> None:
    journal = Journal(h.kind)

    @h.register
    def allocate(cmd: Allocate, uow: Journaling) -> str:
        return "done"

    h.build(logger=logger, uow=journal)
    h.handle(Allocate("lamp"))

    assert [(1, "commit"), (1, "collect"), (1, "close")] == journal.entries


def test_unit_of_work_is_rolled_back_and_closed_when_the_handler_fails(
    h: Harness, logger: object
) -> None:
    journal = Journal(h.kind)

    @h.register
    def allocate(cmd: Allocate, uow: Journaling) -> str:
        raise ValueError("out of stock")

    h.build(logger=logger, uow=journal)
    with pytest.raises(ValueError, match="out of stock"):
        h.handle(Allocate("lamp"))

    assert [(1, "rollback"), (1, "close")] == journal.entries


def test_context_gives_the_unit_of_work_of_the_attempt(h: Harness) -> None:
    journal = Journal(h.kind)
    received: list[object] = []

    @h.register
    def allocate(cmd: Allocate, context: Context) -> str:
        received.append(context.uow)
        return "done"

    h.build(uow=journal)
    h.handle(Allocate("lamp"))

    assert journal.made == received


def test_handler_registered_without_unit_of_work_runs_without_calling_the_factory(
    h: Harness,
) -> None:
    journal = Journal(h.kind)
    received: list[object] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        received.append(context.uow)
        return "done"

    h.build(uow=journal)
    result = h.handle(Allocate("lamp"))

    assert ("done", [None], []) == (result, received, journal.made)


# -- events only after commit ---------------------------------------------------


def test_events_of_the_aggregates_seen_are_collected_after_commit_and_dispatched(
    h: Harness,
    logger: object,
) -> None:
    journal = Journal(h.kind)
    handled: list[Event] = []
    entries_when_handled: list[list[tuple[int, str]]] = []

    @h.register
    def allocate(cmd: Allocate, uow: Journaling) -> str:
        product = uow.track(Product(cmd.sku))
        product.events.append(Allocated(cmd.sku))
        return "done"

    @h.register(uow=False)
    def record(event: Allocated) -> None:
        handled.append(event)
        entries_when_handled.append(list(journal.entries))

    h.build(logger=logger, uow=journal)
    h.handle(Allocate("lamp"))

    assert [Allocated("lamp")] == handled
    assert [[(1, "commit"), (1, "collect"), (1, "close")]] == entries_when_handled


def test_aggregate_events_come_before_events_emitted_on_the_context(h: Harness) -> None:
    handled: list[Event] = []
    recording_handlers(h, handled)

    @h.register
    def allocate(cmd: Allocate, uow: Journaling, context: Context) -> str:
        context.emit(Noted(cmd.sku))
        uow.track(Product(cmd.sku)).events.append(Allocated(cmd.sku))
        return "done"

    h.build(uow=Journal(h.kind))
    h.handle(Allocate("lamp"))

    assert [Allocated("lamp"), Noted("lamp")] == handled


def test_failed_commit_is_a_failed_attempt_whose_events_are_discarded(
    h: Harness, logger: object
) -> None:
    journal = Journal(h.kind, commit_errors=[ValueError("constraint violated")])
    handled: list[Event] = []
    recording_handlers(h, handled)

    @h.register
    def allocate(cmd: Allocate, uow: Journaling, context: Context) -> str:
        uow.track(Product(cmd.sku)).events.append(Allocated(cmd.sku))
        context.emit(Noted(cmd.sku))
        return "done"

    h.build(logger=logger, uow=journal)
    with pytest.raises(ValueError, match="constraint violated"):
        h.handle(Allocate("lamp"))

    assert [] == handled
    assert [(1, "commit"), (1, "rollback"), (1, "close")] == journal.entries


def test_transient_commit_failure_is_retried_and_only_the_retrys_events_are_dispatched(
    h: Harness,
    logger: object,
) -> None:
    journal = Journal(h.kind, commit_errors=[TimeoutError("commit timed out")])
    product = Product("lamp")  # the same object in every attempt: the worst case
    handled: list[Event] = []
    recording_handlers(h, handled)

    @h.register
    def allocate(cmd: Allocate, uow: Journaling) -> str:
        uow.track(product).events.append(Allocated(cmd.sku, attempt=uow.number))
        return "done"

    h.build(logger=logger, uow=journal)
    result = h.handle(Allocate("lamp"))

    assert "done" == result
    assert [Allocated("lamp", attempt=2)] == handled
    assert [
        (1, "commit"),
        (1, "rollback"),
        (1, "close"),
        (2, "commit"),
        (2, "collect"),
        (2, "close"),
    ] == journal.entries


def test_events_of_a_rolled_back_attempt_are_not_dispatched_when_the_retry_succeeds(
    h: Harness,
    logger: object,
) -> None:
    product = Product("lamp")  # the same object in every attempt: the worst case
    handled: list[Event] = []
    recording_handlers(h, handled)

    @h.register
    def allocate(cmd: Allocate, uow: Journaling) -> str:
        uow.track(product).events.append(Allocated(cmd.sku, attempt=uow.number))
        if uow.number == 1:
            raise ConnectionError("connection reset")
        return "done"

    h.build(logger=logger, uow=Journal(h.kind))
    h.handle(Allocate("lamp"))

    assert [Allocated("lamp", attempt=2)] == handled


def test_no_event_nor_change_of_a_rolled_back_attempt_is_kept_with_the_fake_unit_of_work(
    h: Harness,
    logger: object,
) -> None:
    h.products.add(Counted("lamp"))
    handled: list[int] = []

    @h.register
    def allocate(cmd: Allocate, uow: typing.Any) -> str:
        product = uow.products.get(cmd.sku)
        product.allocations += 1
        product.events.append(Allocated(cmd.sku, product.allocations))
        if len(h.uows) == 1:
            raise TimeoutError("serialisation failure")
        return "done"

    @h.register(uow=False)
    def on_allocated(event: Allocated) -> None:
        handled.append(event.attempt)

    h.build(logger=logger)
    h.handle(Allocate("lamp"))

    assert [1] == handled
    assert 1 == h.products.get("lamp").allocations


def test_each_attempt_gets_a_fresh_fake_unit_of_work_committed_or_rolled_back(
    h: Harness,
    logger: object,
) -> None:
    attempts: list[int] = []

    @h.register
    def allocate(cmd: Allocate, uow: typing.Any) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise TimeoutError("busy")
        return "ok"

    h.build(logger=logger)
    assert "ok" == h.handle(Allocate("lamp"))
    assert [(0, 1, True), (0, 1, True), (1, 0, True)] == [
        (u.committed, u.rolled_back, u.closed) for u in h.uows
    ]
    assert 2 == len(h.waits)


def test_events_emitted_on_the_context_of_a_failed_attempt_are_discarded(
    h: Harness, logger: object
) -> None:
    attempts: list[int] = []
    handled: list[Event] = []
    recording_handlers(h, handled)

    @h.register
    def allocate(cmd: Allocate, context: Context) -> str:
        attempts.append(len(attempts) + 1)
        context.emit(Allocated(cmd.sku, attempt=len(attempts)))
        if len(attempts) == 1:
            raise TimeoutError("lock wait timeout")
        return "done"

    h.build(logger=logger, uow=Journal(h.kind))
    h.handle(Allocate("lamp"))

    assert [Allocated("lamp", attempt=2)] == handled


# -- failures of the unit of work itself -------------------------------------------


def test_failing_rollback_does_not_hide_the_error_that_caused_it(
    h: Harness, logs: list[EventDict]
) -> None:
    journal = Journal(h.kind, rollback_error=RuntimeError("connection lost during rollback"))
    error = ValueError("out of stock")

    @h.register
    def allocate(cmd: Allocate, uow: Journaling) -> str:
        raise error

    h.build(uow=journal)
    with pytest.raises(ValueError, match="out of stock") as caught:
        h.handle(Allocate("lamp"))

    assert error is caught.value
    assert [(1, "rollback"), (1, "close")] == journal.entries
    assert ["unit_of_work_rollback_failed"] == [
        entry["event"] for entry in logs if entry["event"].startswith("unit_of_work")
    ]


def test_failing_close_does_not_undo_a_committed_success(h: Harness, logs: list[EventDict]) -> None:
    journal = Journal(h.kind, close_error=RuntimeError("connection already gone"))
    handled: list[Event] = []
    recording_handlers(h, handled)

    @h.register
    def allocate(cmd: Allocate, uow: Journaling) -> str:
        uow.track(Product(cmd.sku)).events.append(Allocated(cmd.sku))
        return "done"

    h.build(uow=journal)
    result = h.handle(Allocate("lamp"))

    assert ("done", [Allocated("lamp")]) == (result, handled)


# -- AbstractUnitOfWork and AbstractAsyncUnitOfWork, of the bus's kind ------------------


def done(result: typing.Any) -> typing.Any:
    """What a call of a unit of work of either kind gives, run to its end."""
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def test_tracked_aggregates_are_seen_once_each_in_order(h: Harness) -> None:
    uow = Journal(h.kind)()
    lamp, chair = Product("lamp"), Product("chair")

    assert lamp is uow.track(lamp)
    uow.track(chair)
    uow.track(lamp)

    assert (lamp, chair) == uow.seen


def test_collecting_new_events_takes_them_from_the_aggregates_in_order(h: Harness) -> None:
    uow = Journal(h.kind)()
    lamp = uow.track(Product("lamp", events=[Allocated("lamp")]))
    chair = uow.track(Product("chair", events=[Noted("chair")]))

    assert [Allocated("lamp"), Noted("chair")] == uow.collect_new_events()
    assert ([], []) == (lamp.events, chair.events)
    assert [] == uow.collect_new_events()


def test_rollback_drops_the_events_of_the_aggregates_seen(h: Harness) -> None:
    uow = Journal(h.kind)()
    lamp = uow.track(Product("lamp", events=[Allocated("lamp")]))

    done(uow.rollback())

    assert [] == lamp.events


def test_rollback_drops_the_events_even_when_the_rollback_fails(h: Harness) -> None:
    uow = Journal(h.kind, rollback_error=RuntimeError("gone"))()
    lamp = uow.track(Product("lamp", events=[Allocated("lamp")]))

    with pytest.raises(RuntimeError, match="gone"):
        done(uow.rollback())

    assert [] == lamp.events


def test_leaving_a_with_block_by_an_exception_rolls_back(h: Harness) -> None:
    uow = Journal(h.kind)()

    def leave_sync_with() -> None:
        with uow:
            raise ValueError("boom")

    async def leave_async_with() -> None:
        async with uow:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        done(leave_async_with() if h.is_async else leave_sync_with())

    assert [(1, "rollback")] == uow.journal.entries


def test_a_repository_the_unit_of_work_lacks_is_named_with_those_it_has(h: Harness) -> None:
    uow = h.uow()
    fake = type(uow)

    with pytest.raises(
        AttributeError, match=rf"^{fake.__name__} has no repository 'orders'; it has: products$"
    ):
        uow.orders  # noqa: B018


@pytest.mark.one_bus("a unit of work on its own")
def test_a_unit_of_work_shows_how_many_aggregates_it_has_seen() -> None:
    uow = Journal()()
    uow.track(Product("lamp"))

    assert f"<{type(uow).__qualname__} seen=1>" == repr(uow)
