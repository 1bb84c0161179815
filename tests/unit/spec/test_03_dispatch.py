"""DESIGN.md §3, Dispatch: commands, events, their order and their failures, on both buses.

Every test runs against both buses (the ``h`` fixture), but the two about
concurrent callers: threads share a sync bus, tasks an async one.
"""

from __future__ import annotations

import asyncio
import threading
import typing

import attrs
import pytest
import structlog
from structlog.typing import EventDict

from messagebus import (
    AsyncMessageBus,
    Command,
    Context,
    Event,
    MessageBus,
    Metadata,
    NoHandlerError,
    NotAMessageError,
    Registry,
    TooManyEventsError,
)
from messagebus.testing import FakeUnitOfWork

from ._buses import Harness


@attrs.frozen
class Allocate(Command[str]):
    orderid: str


@attrs.frozen
class Allocated(Event):
    orderid: str


@attrs.frozen
class Happened(Event):
    name: str


@attrs.frozen
class Numbered(Event):
    name: str
    n: int


@attrs.frozen
class Noted(Event):
    n: int


@attrs.frozen
class Followed(Event):
    n: int


def full_name(handler: typing.Callable[..., object]) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


def named(logs: list[EventDict], event: str) -> list[EventDict]:
    return [entry for entry in logs if entry["event"] == event]


# -- a command: exactly one handler, its result returned, its failure raised ----------


@pytest.mark.parametrize(
    "how", ["alone", "in a unit of work, raising an event", "registered for a named type"]
)
def test_the_command_handlers_result_is_what_handle_returns(
    h: Harness, logger: object, how: str
) -> None:
    if how == "alone":

        @h.register
        def allocate(cmd: Allocate) -> str:
            return f"batch-for-{cmd.orderid}"

        h.build(logger=logger, uow=None)
    elif how == "in a unit of work, raising an event":

        @h.register
        def allocate_in_a_uow(cmd: Allocate, uow: typing.Any, context: Context) -> str:
            context.emit(Allocated(cmd.orderid))
            return f"batch-for-{cmd.orderid}"

        h.build(logger=logger, uow=h.uow)
    else:
        h.register(lambda cmd, uow: f"batch-for-{cmd.orderid}", message=Allocate)
        h.build(logger=logger)

    assert "batch-for-o1" == h.handle(Allocate("o1"))


@pytest.mark.parametrize("in_a_unit_of_work", [False, True], ids=["alone", "in a unit of work"])
def test_a_commands_failure_reaches_the_caller_as_its_own_exception_after_its_retries(
    h: Harness, logger: object, in_a_unit_of_work: bool
) -> None:
    errors = [TimeoutError("first"), TimeoutError("second"), TimeoutError("third")]
    attempts: list[int] = []

    @h.register
    def allocate(cmd: Allocate) -> str:
        attempts.append(len(attempts) + 1)
        raise errors[len(attempts) - 1]

    h.build(logger=logger, uow=h.uow if in_a_unit_of_work else None)
    with pytest.raises(TimeoutError) as caught:
        h.handle(Allocate("o1"))

    assert errors[-1] is caught.value
    assert [1, 2, 3] == attempts


def test_a_commands_domain_error_reaches_the_caller_as_the_original_exception(
    h: Harness,
    logger: object,
) -> None:
    error = ValueError("no stock")

    @h.register
    def allocate(cmd: Allocate, uow: typing.Any) -> str:
        raise error

    h.build(logger=logger)
    with pytest.raises(ValueError, match="no stock") as caught:
        h.handle(Allocate("o1"))
    assert error is caught.value


def test_events_raised_by_a_failed_command_are_not_dispatched(h: Harness, logger: object) -> None:
    handled: list[Event] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        raise ValueError("out of stock")

    @h.register
    def record(event: Allocated) -> None:
        handled.append(event)

    h.build(logger=logger, uow=None)
    with pytest.raises(ValueError, match="out of stock"):
        h.handle(Allocate("o1"))

    assert [] == handled


def test_a_command_without_a_handler_is_refused_naming_it(h: Harness) -> None:
    command = Allocate("o1")
    h.build(uow=None)

    with pytest.raises(NoHandlerError) as caught:
        h.handle(command)

    assert command is caught.value.message
    assert repr(command) in str(caught.value)
    assert "Allocate" in str(caught.value)


@attrs.frozen
class PlainOrder:
    """An attrs class that is neither a Command nor an Event."""

    orderid: str


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Allocate o1", id="str"),
        pytest.param(Allocate, id="the class instead of an instance"),
        42,
        pytest.param({"orderid": "o1"}, id="dict"),
        pytest.param(PlainOrder("o1"), id="a plain attrs instance"),
        pytest.param(None, id="None"),
    ],
)
def test_what_is_not_a_message_is_refused_naming_it(h: Harness, value: object) -> None:
    h.build(uow=None)

    with pytest.raises(NotAMessageError) as caught:
        h.handle(value)

    assert value is caught.value.value
    assert repr(value) in str(caught.value)
    assert type(value).__qualname__ in str(caught.value)
    assert isinstance(caught.value, TypeError)


@pytest.mark.parametrize(
    "emitted", [pytest.param(Allocate("o2"), id="a command"), pytest.param("Allocated", id="a str")]
)
def test_emitting_what_is_not_an_event_fails_the_handler_naming_it_without_a_retry(
    h: Harness, emitted: object
) -> None:
    calls: list[str] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        calls.append(cmd.orderid)
        context.emit(emitted)  # type: ignore[arg-type]
        return "done"

    h.build(uow=None)
    with pytest.raises(NotAMessageError) as caught:
        h.handle(Allocate("o1"))

    assert emitted == caught.value.value
    assert "Context.emit()" in str(caught.value)
    assert repr(emitted) in str(caught.value)
    assert ["o1"] == calls


# -- an event: zero or more handlers, in registration order, each isolated -----------


def test_an_event_given_to_handle_goes_to_each_of_its_handlers(h: Harness, logger: object) -> None:
    calls: list[tuple[str, Event]] = []

    @h.register
    def record(event: Allocated) -> None:
        calls.append(("record", event))

    @h.register
    def notify(event: Allocated) -> None:
        calls.append(("notify", event))

    h.build(logger=logger, uow=None)
    result = h.handle(Allocated("o1"))

    assert None is result
    assert [("record", Allocated("o1")), ("notify", Allocated("o1"))] == calls


def test_an_event_without_handlers_is_handled_without_error(h: Harness, logger: object) -> None:
    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        return "done"

    h.build(logger=logger, uow=None)

    assert "done" == h.handle(Allocate("o1"))
    assert None is h.handle(Allocated("o2"))


def test_the_followers_of_an_event_given_to_handle_are_handled(h: Harness, logger: object) -> None:
    handled: list[int] = []

    @h.register
    def on_noted(event: Noted, context: Context) -> None:
        context.emit(Followed(event.n))

    @h.register
    def on_followed(event: Followed) -> None:
        handled.append(event.n)

    h.build(logger=logger)
    h.handle(Noted(7))
    h.handle(Followed(8))

    assert [7, 8] == handled


def test_events_are_handled_breadth_first_in_the_order_raised_before_handle_returns(
    h: Harness, logger: object
) -> None:
    follow_ups = {"E1": ["E3"], "E2": ["E4"]}
    handled: list[str] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Happened("E1"))
        context.emit(Happened("E2"))
        return "done"

    @h.register(uow=False)
    def on_happened(event: Happened, context: Context) -> None:
        handled.append(event.name)
        for name in follow_ups.get(event.name, []):
            context.emit(Happened(name))

    h.build(uow=None, logger=logger)
    h.handle(Allocate("o1"))

    assert ["E1", "E2", "E3", "E4"] == handled


def test_events_with_and_without_followers_keep_the_order_they_were_raised_in(
    h: Harness, logger: object
) -> None:
    # Noted's handler asks for nothing but its event; Numbered's raises a Followed.
    handled: list[str] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        for event in (Noted(1), Numbered("a", 1), Noted(2), Numbered("b", 2), Noted(3)):
            context.emit(event)
        return "ok"

    @h.register(uow=False)
    def on_noted(event: Noted) -> None:
        handled.append(f"noted {event.n}")

    @h.register(uow=False)
    def on_numbered(event: Numbered, context: Context) -> None:
        handled.append(f"numbered {event.name}")
        context.emit(Followed(event.n))

    @h.register(uow=False)
    def on_followed(event: Followed) -> None:
        handled.append(f"followed {event.n}")

    h.build(logger=logger, uow=None)
    assert "ok" == h.handle(Allocate("lamp"))

    assert [
        "noted 1",
        "numbered a",
        "noted 2",
        "numbered b",
        "noted 3",
        "followed 1",
        "followed 2",
    ] == handled


@pytest.mark.parametrize("in_a_unit_of_work", [False, True], ids=["alone", "in a unit of work"])
def test_an_event_handlers_failure_stops_neither_other_handlers_nor_later_events_nor_the_caller(
    h: Harness, logger: object, logs: list[EventDict], in_a_unit_of_work: bool
) -> None:
    handled: list[tuple[str, str]] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Happened("E1"))
        context.emit(Happened("E2"))
        return "done"

    @h.register
    def fails_on_e1(event: Happened) -> None:
        if event.name == "E1":
            raise ValueError("mail server refused")
        handled.append(("fails_on_e1", event.name))

    @h.register
    def record(event: Happened) -> None:
        handled.append(("record", event.name))

    h.build(logger=logger, uow=h.uow if in_a_unit_of_work else None)
    result = h.handle(Allocate("o1"))

    assert "done" == result
    assert [("record", "E1"), ("fails_on_e1", "E2"), ("record", "E2")] == handled


def test_an_event_handlers_failure_is_logged_with_the_message_the_handler_and_the_traceback(
    h: Harness, logs: list[EventDict]
) -> None:
    error = ValueError("mail server refused")

    @h.register
    def notify(event: Allocated) -> None:
        raise error

    h.build(uow=None)
    h.handle(Allocated("o1"))

    [failed] = named(logs, "message_failed")
    expected = {
        "log_level": "error",
        "outcome": "failed",
        "message_name": "Allocated",
        "handler": full_name(notify),
        "attempt": 1,
        "payload": {"orderid": "o1"},
        "error": "ValueError: mail server refused",
        "exc_info": error,
    }
    assert expected == {key: failed.get(key) for key in expected}
    # Rendered as production renders it, the entry shows the traceback down to the handler.
    rendered = structlog.processors.format_exc_info(None, "error", dict(failed))
    assert "exc_info" not in rendered
    assert rendered["exception"].startswith("Traceback (most recent call last):")
    assert "in notify\n" in rendered["exception"]
    assert rendered["exception"].endswith("ValueError: mail server refused")


# -- state local to the call: one bus, many callers at once ----------------------------


@pytest.mark.one_bus("threads share a sync bus")
def test_one_bus_serves_many_threads_at_once() -> None:
    registry = Registry()
    both_inside = threading.Barrier(2, timeout=10)
    caused_by: dict[str, typing.Any] = {}

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        both_inside.wait()  # both dispatches are under way at the same time
        context.emit(Allocated(cmd.orderid))
        return f"batch-for-{cmd.orderid}"

    @registry.register
    def record(event: Allocated, metadata: Metadata) -> None:
        caused_by[event.orderid] = metadata.causation_id

    bus = MessageBus(registry, uow=FakeUnitOfWork)
    given = {"o1": Metadata.new(), "o2": Metadata.new()}
    results: dict[str, str] = {}

    def dispatch(orderid: str) -> None:
        results[orderid] = bus.handle(Allocate(orderid), metadata=given[orderid])

    threads = [threading.Thread(target=dispatch, args=(orderid,)) for orderid in given]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert {"o1": "batch-for-o1", "o2": "batch-for-o2"} == results
    assert {orderid: metadata.message_id for orderid, metadata in given.items()} == caused_by


@pytest.mark.one_bus("tasks share an async bus")
def test_one_async_bus_serves_many_tasks_at_once() -> None:
    registry = Registry()
    inside: list[str] = []
    all_inside = asyncio.Event()
    caused_by: dict[str, typing.Any] = {}
    handled: list[tuple[str, str]] = []
    given = {f"o{n}": Metadata.new() for n in range(5)}

    @registry.register(uow=False)
    async def allocate(cmd: Allocate, context: Context) -> str:
        inside.append(cmd.orderid)
        if len(inside) == len(given):
            all_inside.set()
        await all_inside.wait()  # every dispatch is under way at the same time
        context.emit(Allocated(cmd.orderid))
        return f"batch-for-{cmd.orderid}"

    @registry.register(uow=False)
    async def record(event: Allocated, metadata: Metadata) -> None:
        await asyncio.sleep(0)  # lets the other tasks in between
        caused_by[event.orderid] = metadata.causation_id
        handled.append(("record", event.orderid))

    @registry.register(uow=False)
    async def notify(event: Allocated) -> None:
        handled.append(("notify", event.orderid))

    bus = AsyncMessageBus(registry)

    async def main() -> list[str]:
        return list(
            await asyncio.gather(
                *(bus.handle(Allocate(orderid), metadata=given[orderid]) for orderid in given)
            )
        )

    results = asyncio.run(main())

    assert [f"batch-for-{orderid}" for orderid in given] == results
    assert {orderid: metadata.message_id for orderid, metadata in given.items()} == caused_by
    assert sorted((name, orderid) for name in ("notify", "record") for orderid in given) == sorted(
        handled
    )


# -- a chain of events that does not end (issue: runaway chains) ---------------------------


def test_a_chain_of_events_that_never_ends_stops_at_the_limit_naming_its_types(
    h: Harness,
) -> None:
    handled: list[int] = []

    @h.register(uow=False)
    def again(event: Numbered, context: Context) -> None:
        handled.append(event.n)
        context.emit(Numbered(event.name, event.n + 1))

    h.build(uow=None, max_events=50)
    with pytest.raises(TooManyEventsError) as caught:
        h.handle(Numbered("loop", 0))

    assert 50 == caught.value.limit
    assert ("Numbered",) * 12 == caught.value.chain
    assert "more than 50 events" in str(caught.value)
    assert list(range(51)) == handled  # the root, then 50 raised: the 51st raised stops it
    assert [] == [n for n in handled if n > 51]


def test_the_event_limit_counts_every_event_of_one_handle_not_of_the_bus(h: Harness) -> None:
    @h.register(uow=False)
    def fan(event: Happened, context: Context) -> None:
        for n in range(10):
            context.emit(Numbered(event.name, n))

    @h.register(uow=False)
    def numbered(event: Numbered) -> None:
        pass

    h.build(uow=None, max_events=10)
    for _ in range(3):  # each handle() raises 10: within the limit, every time
        h.handle(Happened("burst"))


@pytest.mark.one_bus("a check of the constructor, shared code")
def test_the_event_limit_must_be_a_positive_integer() -> None:
    from messagebus import ConfigurationError, MessageBus, Registry

    with pytest.raises(ConfigurationError, match="max_events must be a positive integer"):
        MessageBus(Registry(), max_events=0)


def test_the_event_limit_counts_the_events_of_the_first_message_too(h: Harness) -> None:
    @h.register(uow=False)
    def burst(cmd: Allocate, context: Context) -> str:
        for n in range(10):
            context.emit(Numbered("burst", n))
        return "ok"

    h.build(uow=None, max_events=3)
    with pytest.raises(TooManyEventsError):
        h.handle(Allocate("o1"))
