"""The recorder: what a bus handled, raised, retried and gave up on, queried in asserts."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter

import attrs
import pytest

from messagebus import (
    AsyncMessageBus,
    Command,
    Context,
    Event,
    MessageBus,
    Metadata,
    Registry,
    RetryPolicy,
    Transient,
)
from messagebus.observe import Listener
from messagebus.testing import Dispatch, FakeUnitOfWork, InMemoryRepository, Recorder


@attrs.frozen
class Allocate(Command[str]):
    orderid: str
    qty: int


@attrs.frozen
class Allocated(Event):
    orderid: str
    batchref: str


@attrs.frozen
class Notified(Event):
    orderid: str


@attrs.frozen
class Restocked(Event):
    sku: str


class MailBusy(Transient):
    pass


class Product:
    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.events: list[Event] = []


def build(
    registry: Registry, waits: list[float] | None = None, **kwargs: object
) -> tuple[MessageBus, Recorder]:
    recorder = Recorder()
    sleep = (waits if waits is not None else []).append
    bus = MessageBus(registry, listeners=[recorder], sleep=sleep, **kwargs)  # type: ignore[arg-type]
    return bus, recorder


def allocation_registry() -> Registry:
    registry = Registry()

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid, "b1"))
        return "b1"

    @registry.register(uow=False)
    def notify(event: Allocated, context: Context) -> None:
        context.emit(Notified(event.orderid))

    @registry.register(uow=False)
    def log_allocation(event: Allocated) -> None:
        pass

    return registry


def test_a_recorder_is_a_listener() -> None:
    assert isinstance(Recorder(), Listener)


def test_it_records_the_command_and_the_events_that_followed_in_dispatch_order() -> None:
    bus, recorder = build(allocation_registry())

    bus.handle(Allocate("o1", 3))

    assert [Allocate("o1", 3), Allocated("o1", "b1"), Notified("o1")] == recorder.dispatched()
    assert [Allocated("o1", "b1"), Notified("o1")] == recorder.raised
    assert [Allocated("o1", "b1")] == recorder.dispatched(Allocated)
    assert [Allocated("o1", "b1"), Notified("o1")] == recorder.dispatched((Allocated, Notified))


def test_an_event_given_to_the_bus_is_dispatched_but_not_raised() -> None:
    bus, recorder = build(allocation_registry())

    bus.handle(Allocated("o1", "b1"))

    assert [Allocated("o1", "b1"), Notified("o1")] == recorder.dispatched()
    assert [Notified("o1")] == recorder.raised
    assert [False, True] == [dispatch.raised for dispatch in recorder.dispatches]


def test_causation_links_each_event_to_the_message_that_raised_it() -> None:
    bus, recorder = build(allocation_registry())
    command = Allocate("o1", 3)

    bus.handle(command)

    assert [Allocated("o1", "b1")] == recorder.caused_by(command)
    assert [Allocated("o1", "b1"), Notified("o1")] == recorder.caused_by(command, transitively=True)
    assert [Notified("o1")] == recorder.caused_by(Allocated("o1", "b1"))
    assert [] == recorder.caused_by(Notified("o1"))
    assert command == recorder.cause_of(Allocated("o1", "b1"))
    assert Allocated("o1", "b1") == recorder.cause_of(Notified("o1"))
    assert recorder.cause_of(command) is None


def test_the_metadata_recorded_is_the_one_handlers_saw() -> None:
    bus, recorder = build(allocation_registry())
    command = Allocate("o1", 3)

    bus.handle(command)

    command_metadata = recorder.metadata_of(command)
    event_metadata = recorder.metadata_of(Allocated("o1", "b1"))
    assert command_metadata.message_id == event_metadata.causation_id
    assert command_metadata.correlation_id == event_metadata.correlation_id
    assert [Allocated("o1", "b1")] == recorder.caused_by(command_metadata)
    assert [Allocated("o1", "b1")] == recorder.caused_by(command_metadata.message_id)
    assert [Dispatch(command, command_metadata)] == recorder.dispatches[:1]


def test_asking_about_a_message_never_dispatched_is_an_error() -> None:
    _, recorder = build(allocation_registry())

    with pytest.raises(LookupError, match=r"no dispatch of Allocate\(orderid='o9', qty=1\)"):
        recorder.caused_by(Allocate("o9", 1))
    with pytest.raises(LookupError):
        recorder.cause_of(uuid.uuid4())


def test_the_cause_of_a_message_must_have_been_recorded_too() -> None:
    recorder = Recorder()
    orphan = Metadata.new(causation_id=uuid.uuid4())
    recorder.message_dispatched(Notified("o1"), orphan)

    with pytest.raises(LookupError, match="no dispatch of the message that raised Notified"):
        recorder.cause_of(Notified("o1"))
    # Shown as a root of the tree, since its cause is not there.
    assert "Notified(orderid='o1')" == recorder.tree()


def test_the_very_message_given_is_told_apart_from_an_equal_one() -> None:
    bus, recorder = build(allocation_registry())
    first, second = Allocate("o1", 3), Allocate("o1", 3)

    bus.handle(first)
    bus.handle(second)

    first_events = recorder.caused_by(first)
    assert [Allocated("o1", "b1")] == first_events
    assert recorder.metadata_of(first) != recorder.metadata_of(second)
    # An equal message that was not itself dispatched stands for every equal one.
    assert 2 == len(recorder.caused_by(Allocate("o1", 3)))


def test_handled_lists_each_message_once_in_order_filtered_by_type_and_handler() -> None:
    registry = allocation_registry()
    bus, recorder = build(registry)

    bus.handle(Allocate("o1", 3))
    bus.handle(Allocate("o2", 1))

    assert [Allocate("o1", 3), Allocate("o2", 1)] == recorder.handled(Allocate)
    assert [Allocated("o1", "b1"), Allocated("o2", "b1")] == recorder.handled(Allocated)
    assert [Allocated("o1", "b1"), Allocated("o2", "b1")] == recorder.handled(handler="notify")
    assert [Allocated("o1", "b1"), Allocated("o2", "b1")] == recorder.handled(
        handler="allocation_registry.<locals>.log_allocation"
    )
    [registration] = registry.commands.values()
    assert [Allocate("o1", 3), Allocate("o2", 1)] == recorder.handled(handler=registration.handler)
    assert [] == recorder.handled(handler="no_such_handler")
    # Notified was dispatched, but no handler handles it.
    assert [] == recorder.handled(Notified)
    assert 4 == len(recorder.handled())


def test_a_handler_that_gives_up_is_recorded_with_its_error_and_attempts() -> None:
    registry = Registry()
    error = ValueError("no such customer")

    @registry.register(uow=False)
    def award_points(event: Allocated) -> None:
        raise error

    @registry.register(uow=False)
    def notify(event: Allocated) -> None:
        pass

    bus, recorder = build(registry)

    bus.handle(Allocated("o1", "b1"))

    [failure] = recorder.failed()
    assert failure.handler.endswith("award_points")
    assert failure.error is error
    assert failure.message == Allocated("o1", "b1")
    assert 1 == failure.attempt
    assert [failure] == recorder.failed(Allocated, handler=award_points)
    assert [] == recorder.failed(handler=notify)
    assert [Allocated("o1", "b1")] == recorder.handled()


def test_transient_failures_are_recorded_as_retried_then_the_success() -> None:
    registry = Registry()
    attempts: Counter[str] = Counter()

    @registry.register(uow=False)
    def send_mail(event: Allocated) -> None:
        attempts[event.orderid] += 1
        if attempts[event.orderid] < 3:
            raise MailBusy(f"busy {attempts[event.orderid]}")

    waits: list[float] = []
    bus, recorder = build(registry, waits)

    bus.handle(Allocated("o1", "b1"))

    retried = recorder.retried(handler="send_mail")
    assert [1, 2] == [attempt.attempt for attempt in retried]
    assert ["busy 1", "busy 2"] == [str(attempt.error) for attempt in retried]
    assert [3] == [attempt.attempt for attempt in recorder.succeeded()]
    assert [] == recorder.failed()
    assert 2 == len(waits)


def test_a_failed_command_is_recorded_and_its_events_never_are() -> None:
    registry = Registry()
    products = InMemoryRepository(key=lambda product: product.sku)

    @registry.register
    def allocate(cmd: Allocate, uow: FakeUnitOfWork) -> str:
        product = Product("LAMP")
        product.events.append(Allocated(cmd.orderid, "b1"))
        uow.products.add(product)
        raise RuntimeError("the domain refused")

    bus, recorder = build(
        registry, uow=lambda: FakeUnitOfWork(products=products), retry=RetryPolicy.no_retries()
    )

    with pytest.raises(RuntimeError):
        bus.handle(Allocate("o1", 3))

    [failure] = recorder.failed(Allocate)
    assert "the domain refused" == str(failure.error)
    assert [] == recorder.raised
    assert [Allocate("o1", 3)] == recorder.dispatched()


def test_correlated_keeps_one_message_and_all_that_followed_from_it() -> None:
    bus, recorder = build(allocation_registry())
    first = Allocate("o1", 3)

    bus.handle(first)
    bus.handle(Allocate("o2", 1))

    only_first = recorder.correlated(first)
    assert [first, Allocated("o1", "b1"), Notified("o1")] == only_first.dispatched()
    assert 3 == len(only_first.succeeded())
    assert (
        only_first.dispatched()
        == recorder.correlated(recorder.metadata_of(first).correlation_id).dispatched()
    )
    assert 6 == len(recorder.dispatched())  # the original keeps everything


def test_clear_forgets_everything() -> None:
    bus, recorder = build(allocation_registry())
    bus.handle(Allocate("o1", 3))

    recorder.clear()

    assert ([], [], []) == (recorder.dispatches, recorder.attempts, recorder.raised)
    assert "<Recorder: 0 messages, 0 attempts>" == repr(recorder)


def test_tree_shows_each_message_under_its_cause_with_retries_and_failures() -> None:
    registry = Registry()
    calls: Counter[str] = Counter()

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid, "b1"))
        return "b1"

    @registry.register(uow=False)
    def publish(event: Allocated) -> None:
        raise ConnectionError("refused")

    @registry.register(uow=False)
    def notify(event: Allocated, context: Context) -> None:
        calls["notify"] += 1
        if calls["notify"] == 1:
            raise MailBusy("421")
        context.emit(Notified(event.orderid))

    bus, recorder = build(registry)

    bus.handle(Allocate("o1", 3))

    expected = "\n".join(
        [
            "Allocate(orderid='o1', qty=3)",
            "  Allocated(orderid='o1', batchref='b1')",
            f"    ! {__name__}.test_tree_shows_each_message_under_its_cause_with_retries_and_"
            "failures.<locals>.publish gave up after 3 attempts: ConnectionError: refused",
            f"    ~ {__name__}.test_tree_shows_each_message_under_its_cause_with_retries_and_"
            "failures.<locals>.notify attempt 1 failed and was retried: MailBusy: 421",
            "    Notified(orderid='o1')",
        ]
    )
    assert expected == "\n".join(
        line for line in recorder.tree().splitlines() if "publish attempt" not in line
    )
    assert "(nothing was dispatched)" == Recorder().tree()


def test_one_recorder_serves_many_threads_at_once() -> None:
    bus, recorder = build(allocation_registry())
    start = threading.Barrier(8)

    def work(thread: int) -> None:
        start.wait()
        for number in range(50):
            bus.handle(Allocate(f"t{thread}-{number}", 1))

    threads = [threading.Thread(target=work, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert 400 == len(recorder.handled(Allocate))
    assert 800 == len(recorder.raised)
    assert 1200 == len(recorder.succeeded())
    for command in recorder.handled(Allocate)[:20]:
        assert [Allocated(command.orderid, "b1"), Notified(command.orderid)] == (
            recorder.caused_by(command, transitively=True)
        )


def test_it_records_the_async_bus_alike() -> None:
    registry = Registry()

    @registry.register(uow=False)
    async def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid, "b1"))
        return "b1"

    @registry.register(uow=False)
    async def publish(event: Allocated) -> None:
        raise ConnectionError("refused")

    async def no_sleep(seconds: float) -> None:
        pass

    recorder = Recorder()
    bus = AsyncMessageBus(registry, listeners=[recorder], sleep=no_sleep)

    assert "b1" == asyncio.run(bus.handle(Allocate("o1", 3)))

    assert [Allocated("o1", "b1")] == recorder.raised
    assert [Allocate("o1", 3)] == recorder.handled(Allocate)
    assert [3] == [failure.attempt for failure in recorder.failed(handler="publish")]
    assert 2 == len(recorder.retried())
