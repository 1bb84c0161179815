"""DESIGN.md §1, Messages: the metadata each dispatch carries, on both buses.

A message has one id, seen by every handler of it and by every retry attempt;
an event raised while handling M is caused by M and shares its correlation.
The messages themselves (names, versions, serialisation, repr) are tested in
``tests/unit/test_messages.py`` and ``tests/unit/test_serialization.py``.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

import attrs
import pytest
import structlog

from messagebus import Command, Context, Event, MessageBus, Metadata, Registry
from messagebus.observe import InMemoryDeadLetters
from messagebus.testing import FakeClock

from ._buses import Harness
from ._loggers import quiet_logger


@attrs.frozen
class Allocate(Command[str]):
    orderid: str


@attrs.frozen
class Allocated(Event):
    orderid: str
    n: int = 0


def test_every_handler_of_a_message_sees_the_same_message_id(h: Harness, logger: object) -> None:
    seen: list[Metadata] = []

    @h.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen.append(metadata)

    @h.register
    def notify(event: Allocated, context: Context) -> None:
        seen.append(context.metadata)

    h.build(uow=None, logger=logger)
    h.handle(Allocated("o1"))

    assert 2 == len(seen)
    assert seen[0].message_id == seen[1].message_id


def test_every_handler_of_an_event_sees_its_one_id_at_the_root_and_when_raised(
    h: Harness,
) -> None:
    store = InMemoryDeadLetters()

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        return "ok"

    @h.register(uow=False)
    def first(event: Allocated) -> None:
        raise ValueError("bug")

    @h.register(uow=False)
    def second(event: Allocated) -> None:
        raise ValueError("bug")

    h.build(logger=quiet_logger(), uow=None, dead_letters=store)
    h.handle(Allocate("lamp"))  # an event raised by a command
    h.handle(Allocated("sofa"))  # an event handled at the root

    lamp_1, lamp_2, sofa_1, sofa_2 = (letter.metadata["message_id"] for letter in store.letters)
    assert lamp_1 == lamp_2
    assert sofa_1 == sofa_2
    assert lamp_1 != sofa_1


def test_every_handler_of_an_event_raised_on_redelivery_sees_its_one_id(h: Harness) -> None:
    store = InMemoryDeadLetters()
    given = Metadata.new()

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        return "ok"

    @h.register(uow=False)
    def first(event: Allocated) -> None:
        raise ValueError("bug")

    @h.register(uow=False)
    def second(event: Allocated) -> None:
        raise ValueError("bug")

    h.build(logger=quiet_logger(), uow=None, dead_letters=store)
    name = f"{__name__}.test_every_handler_of_an_event_raised_on_redelivery_sees_its_one_id"
    assert "ok" == h.redeliver(
        Allocate("lamp"), handler=f"{name}.<locals>.allocate", metadata=given
    )

    first_letter, second_letter = (letter.metadata for letter in store.letters)
    assert first_letter["message_id"] == second_letter["message_id"]
    assert [str(given.message_id)] * 2 == [
        first_letter["causation_id"],
        second_letter["causation_id"],
    ]


def test_every_retry_attempt_sees_the_same_message_id(h: Harness) -> None:
    seen: list[Metadata] = []

    @h.register
    def allocate(cmd: Allocate, metadata: Metadata) -> str:
        seen.append(metadata)
        if len(seen) < 3:
            raise TimeoutError("database busy")
        return "done"

    h.build(uow=None)
    h.handle(Allocate("o1"))

    assert 3 == len(seen)
    assert {seen[0].message_id} == {metadata.message_id for metadata in seen}


def test_a_retried_command_keeps_one_id_and_only_its_last_attempts_events_follow(
    h: Harness, logger: object
) -> None:
    ids: list[UUID] = []
    causes: list[tuple[int, UUID | None]] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid, n=len(ids)))
        ids.append(context.metadata.message_id)
        if len(ids) < 3:
            raise TimeoutError("database busy")
        return "ok"

    @h.register(uow=False)
    def on_allocated(event: Allocated, metadata: Metadata) -> None:
        causes.append((event.n, metadata.causation_id))

    h.build(logger=logger, uow=None)
    assert "ok" == h.handle(Allocate("lamp"))

    assert [ids[0]] * 3 == ids
    assert [(2, ids[0])] == causes
    assert 2 == len(h.waits)


def test_a_message_given_to_handle_starts_a_correlation_and_has_no_cause(h: Harness) -> None:
    seen: list[Metadata] = []

    @h.register
    def allocate(cmd: Allocate, metadata: Metadata) -> str:
        seen.append(metadata)
        return "done"

    h.build(uow=None)
    h.handle(Allocate("o1"))

    [metadata] = seen
    assert (metadata.message_id, None) == (metadata.correlation_id, metadata.causation_id)
    assert metadata.created_at.utcoffset() is not None


def test_a_raised_event_is_caused_by_the_command_and_shares_its_correlation_id(
    h: Harness,
) -> None:
    seen: dict[str, Metadata] = {}

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        seen["command"] = context.metadata
        context.emit(Allocated(cmd.orderid))
        return "done"

    @h.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen["event"] = metadata

    h.build(uow=None)
    h.handle(Allocate("o1"))

    command, event = seen["command"], seen["event"]
    assert (command.message_id, command.correlation_id) == (
        event.causation_id,
        event.correlation_id,
    )
    assert command.message_id != event.message_id


@pytest.mark.parametrize("asked", ["as a parameter", "from the context"])
@pytest.mark.parametrize("in_a_unit_of_work", [False, True], ids=["alone", "in a unit of work"])
def test_metadata_given_to_handle_is_the_metadata_of_the_message_and_its_events_name_it(
    h: Harness, logger: object, asked: str, in_a_unit_of_work: bool
) -> None:
    given = Metadata.new()
    seen: dict[str, Metadata] = {}

    if asked == "as a parameter":

        @h.register(uow=in_a_unit_of_work)
        def allocate(cmd: Allocate, metadata: Metadata, context: Context) -> str:
            seen["command"] = metadata
            context.emit(Allocated(cmd.orderid))
            return "done"

    else:

        @h.register(uow=in_a_unit_of_work)
        def allocate_with_a_context(cmd: Allocate, context: Context) -> str:
            seen["command"] = context.metadata
            context.emit(Allocated(cmd.orderid))
            return "done"

    @h.register(uow=False)
    def record(event: Allocated, metadata: Metadata) -> None:
        seen["event"] = metadata

    h.build(uow=h.uow if in_a_unit_of_work else None, logger=logger)
    assert "done" == h.handle(Allocate("o1"), metadata=given)

    assert given == seen["command"]
    assert (given.message_id, given.correlation_id) == (
        seen["event"].causation_id,
        seen["event"].correlation_id,
    )


def test_metadata_given_with_an_event_is_the_metadata_of_the_event(h: Harness) -> None:
    given = Metadata.new()
    seen: list[Metadata] = []

    @h.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen.append(metadata)

    h.build(uow=None)
    h.handle(Allocated("o1"), metadata=given)

    assert [given] == seen


def test_a_command_is_older_than_the_events_it_raises(h: Harness) -> None:
    # The command's id and time are asked for only after the dispatch, through
    # its context: they are still those its event names as its cause.
    contexts: list[Context] = []
    seen: list[Metadata] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        contexts.append(context)
        context.emit(Allocated(cmd.orderid))
        return "ok"

    @h.register(uow=False)
    def on_allocated(event: Allocated, metadata: Metadata) -> None:
        seen.append(metadata)

    h.build(logger=quiet_logger(), uow=None, clock=FakeClock(tick=1e-6))
    assert "ok" == h.handle(Allocate("lamp"))

    command = contexts[0].metadata  # asked for after the dispatch
    (event,) = seen
    assert command.message_id == event.causation_id
    assert command.created_at < event.created_at


@pytest.mark.one_bus("threads share a sync bus")
def test_threads_given_the_context_see_one_id_while_it_is_being_fixed() -> None:
    # The handler is called before its message has an id, which is fixed when
    # first asked for. Here a thread of the handler's asks while the handler's
    # own first request is fixing it (reading the clock).
    registry = Registry()
    seen: dict[str, Any] = {}
    reading = threading.Event()
    threads: list[threading.Thread] = []

    def read() -> None:
        reading.set()
        seen["thread"] = seen["context"].metadata

    class ClockThatLetsAThreadAsk(FakeClock):
        asking = False

        def time_ns(self) -> int:
            if self.asking:
                self.asking = False
                threads.append(threading.Thread(target=read))
                threads[0].start()
                reading.wait()  # the thread goes on alone: it asks now
            return super().time_ns()

    clock = ClockThatLetsAThreadAsk()

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        seen["context"] = context
        clock.asking = True
        seen["handler"] = context.metadata
        return "ok"

    quiet = structlog.wrap_logger(
        structlog.ReturnLogger(), wrapper_class=structlog.make_filtering_bound_logger(40)
    )
    bus = MessageBus(registry, logger=quiet, clock=clock)
    assert "ok" == bus.handle(Allocate("o1"))

    threads[0].join()
    assert seen["handler"] == seen["thread"]
