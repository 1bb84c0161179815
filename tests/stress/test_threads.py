"""One bus shared by many threads: nothing lost, nothing duplicated, nothing crossed.

Eight threads start together (a barrier) and each sends 2,000 commands through
the same bus. Every command raises one event, half of them through
``Context.emit`` and half through an aggregate's ``events`` list in a
``FakeUnitOfWork``; two handlers handle each event, one in a unit of work and
one without. Handlers record what they saw with ``list.append`` (atomic), and
the checks run once every thread has finished.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import attrs
import pytest
import structlog

from messagebus import Command, Context, Event, MessageBus, Metadata, Registry
from messagebus.testing import FakeUnitOfWork, InMemoryRepository

THREADS = 8
COMMANDS_PER_THREAD = 2_000


@attrs.frozen
class PlaceOrder(Command[str]):
    order_id: str
    via_aggregate: bool


@attrs.frozen
class OrderPlaced(Event):
    order_id: str


@attrs.define
class Order:
    order_id: str
    events: list[Event] = attrs.Factory(list)


@attrs.frozen
class Seen:
    """What one handler attempt saw of the message it handled."""

    order_id: str
    metadata: Metadata
    thread: int


def quiet_logger() -> object:
    """A logger that drops the per-attempt info events before any processor runs."""
    return structlog.wrap_logger(
        structlog.PrintLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


@pytest.fixture(autouse=True)
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every 10 µs instead of every 5 ms, so that dispatches interleave."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.slow
def test_one_bus_shared_by_eight_threads_handles_every_event_exactly_once_per_handler() -> None:
    orders: InMemoryRepository[Order] = InMemoryRepository(key=lambda order: order.order_id)
    commands_seen: list[Seen] = []
    seen_by: dict[str, list[Seen]] = {"ledger": [], "mailer": []}
    registry = Registry()

    @registry.register
    def place_order(command: PlaceOrder, uow: FakeUnitOfWork, context: Context) -> str:
        if command.via_aggregate:
            order = Order(command.order_id)
            uow.orders.add(order)
            order.events.append(OrderPlaced(command.order_id))
        else:
            context.emit(OrderPlaced(command.order_id))
        commands_seen.append(Seen(command.order_id, context.metadata, threading.get_ident()))
        return f"placed {command.order_id}"

    @registry.register
    def add_to_ledger(event: OrderPlaced, uow: FakeUnitOfWork, metadata: Metadata) -> None:
        seen_by["ledger"].append(Seen(event.order_id, metadata, threading.get_ident()))
        time.sleep(0)  # let another thread run mid-dispatch

    @registry.register(uow=False)
    def send_mail(event: OrderPlaced, metadata: Metadata) -> None:
        seen_by["mailer"].append(Seen(event.order_id, metadata, threading.get_ident()))
        time.sleep(0)

    sleeps: list[float] = []
    bus = MessageBus(
        registry,
        uow=lambda: FakeUnitOfWork(orders=orders),
        sleep=sleeps.append,
        logger=quiet_logger(),
    )
    barrier = threading.Barrier(THREADS, timeout=60)

    def work(thread: int) -> tuple[int, list[tuple[str, str]]]:
        commands = [
            PlaceOrder(f"t{thread}-{i}", via_aggregate=i % 2 == 0)
            for i in range(COMMANDS_PER_THREAD)
        ]
        barrier.wait()
        results = [(command.order_id, bus.handle(command)) for command in commands]
        return threading.get_ident(), results

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(work, thread) for thread in range(THREADS)]
        outcomes = [future.result(timeout=120) for future in futures]

    all_ids = {f"t{thread}-{i}" for thread in range(THREADS) for i in range(COMMANDS_PER_THREAD)}

    # Every command returned its own result, to the thread that sent it.
    thread_of: dict[str, int] = {}
    for thread, (ident, results) in enumerate(outcomes):
        expected = [(f"t{thread}-{i}", f"placed t{thread}-{i}") for i in range(COMMANDS_PER_THREAD)]
        assert expected == results
        thread_of.update((order_id, ident) for order_id, _ in results)

    # No retries happened, so each command handler ran once, in its caller's thread.
    assert sleeps == []
    assert Counter(dict.fromkeys(all_ids, 1)) == Counter(seen.order_id for seen in commands_seen)
    assert [seen for seen in commands_seen if seen.thread != thread_of[seen.order_id]][:3] == []
    command_metadata = {seen.order_id: seen.metadata for seen in commands_seen}
    command_ids = {metadata.message_id for metadata in command_metadata.values()}
    assert len(all_ids) == len(command_ids)
    assert all(metadata.causation_id is None for metadata in command_metadata.values())

    # The aggregates of committed attempts are stored, without their events.
    committed_orders = {order_id for order_id in all_ids if int(order_id.split("-")[1]) % 2 == 0}
    assert committed_orders == set(orders.keys())
    assert orders.get("t0-0").events == []  # type: ignore[union-attr]

    # Each handler handled every event exactly once, in the thread that sent its command,
    # and saw the event's causation as its command's message id.
    event_metadata: dict[str, dict[str, Metadata]] = {}
    for handler, seen in seen_by.items():
        counts = Counter(s.order_id for s in seen)
        assert Counter(dict.fromkeys(all_ids, 1)) == counts, handler
        assert [s for s in seen if s.thread != thread_of[s.order_id]][:3] == [], handler
        miscaused = [
            s
            for s in seen
            if s.metadata.causation_id != command_metadata[s.order_id].message_id
            or s.metadata.correlation_id != command_metadata[s.order_id].correlation_id
        ]
        assert miscaused[:3] == [], handler
        event_metadata[handler] = {s.order_id: s.metadata for s in seen}

    # An event has one id, seen by both of its handlers, unlike any other message's id.
    assert event_metadata["ledger"] == event_metadata["mailer"]
    event_ids = {metadata.message_id for metadata in event_metadata["ledger"].values()}
    assert len(all_ids) == len(event_ids)
    assert set() == event_ids & command_ids
    assert all(isinstance(message_id, uuid.UUID) for message_id in event_ids)
