"""Dispatch (DESIGN.md §3): commands, events, their order, failures, metadata and logs."""

import logging
import threading
import typing

import attrs
import pytest
import structlog
from structlog.typing import EventDict

from messagebus import (
    Command,
    Context,
    Event,
    MessageBus,
    Metadata,
    NoHandlerError,
    NotAMessageError,
    Registry,
    Serializer,
)
from messagebus.testing import FakeUnitOfWork


@attrs.frozen
class Allocate(Command[str]):
    orderid: str


@attrs.frozen
class Allocated(Event):
    orderid: str


@attrs.frozen
class Happened(Event):
    name: str


def full_name(handler: typing.Callable[..., object]) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


def named(logs: list[EventDict], event: str) -> list[EventDict]:
    return [entry for entry in logs if entry["event"] == event]


# -- commands -----------------------------------------------------------------------


def test_command_handlers_return_value_is_what_handle_returns() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate) -> str:
        return f"batch-for-{cmd.orderid}"

    assert "batch-for-o1" == MessageBus(registry).handle(Allocate("o1"))


def test_command_handlers_return_value_is_returned_when_it_runs_in_a_unit_of_work() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate, uow: FakeUnitOfWork, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        return f"batch-for-{cmd.orderid}"

    assert "batch-for-o1" == MessageBus(registry, uow=FakeUnitOfWork).handle(Allocate("o1"))


def test_command_failure_reaches_the_caller_as_the_handlers_own_exception_after_retries(
    waits: list[float],
) -> None:
    registry = Registry()
    errors = [TimeoutError("first"), TimeoutError("second"), TimeoutError("third")]
    attempts: list[int] = []

    @registry.register
    def allocate(cmd: Allocate) -> str:
        attempts.append(len(attempts) + 1)
        raise errors[len(attempts) - 1]

    with pytest.raises(TimeoutError) as caught:
        MessageBus(registry, sleep=waits.append).handle(Allocate("o1"))

    assert errors[-1] is caught.value
    assert [1, 2, 3] == attempts


def test_events_raised_by_a_failed_command_are_not_dispatched() -> None:
    registry = Registry()
    handled: list[Event] = []

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        raise ValueError("out of stock")

    @registry.register
    def record(event: Allocated) -> None:
        handled.append(event)

    with pytest.raises(ValueError, match="out of stock"):
        MessageBus(registry).handle(Allocate("o1"))

    assert [] == handled


def test_command_without_a_handler_is_refused() -> None:
    command = Allocate("o1")

    with pytest.raises(NoHandlerError) as caught:
        MessageBus(Registry()).handle(command)

    assert command is caught.value.message
    assert repr(command) in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [pytest.param("Allocate o1", id="str"), pytest.param(Allocate, id="class"), 42],
)
def test_what_is_not_a_message_is_refused_naming_it(value: object) -> None:
    with pytest.raises(NotAMessageError) as caught:
        MessageBus(Registry()).handle(value)  # type: ignore[call-overload]

    assert value is caught.value.value
    assert repr(value) in str(caught.value)


# -- events -----------------------------------------------------------------------


def test_event_given_to_handle_goes_to_each_of_its_handlers() -> None:
    registry = Registry()
    calls: list[tuple[str, Event]] = []

    @registry.register
    def record(event: Allocated) -> None:
        calls.append(("record", event))

    @registry.register
    def notify(event: Allocated) -> None:
        calls.append(("notify", event))

    result = MessageBus(registry).handle(Allocated("o1"))  # type: ignore[func-returns-value]

    assert None is result
    assert [("record", Allocated("o1")), ("notify", Allocated("o1"))] == calls


def test_event_without_handlers_is_handled_without_error() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        return "done"

    bus = MessageBus(registry)

    assert "done" == bus.handle(Allocate("o1"))
    assert None is bus.handle(Allocated("o2"))  # type: ignore[func-returns-value]


def test_events_are_handled_breadth_first_in_the_order_raised_before_handle_returns() -> None:
    registry = Registry()
    follow_ups = {"E1": ["E3"], "E2": ["E4"]}
    handled: list[str] = []

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Happened("E1"))
        context.emit(Happened("E2"))
        return "done"

    @registry.register(uow=False)
    def on_happened(event: Happened, context: Context) -> None:
        handled.append(event.name)
        for name in follow_ups.get(event.name, []):
            context.emit(Happened(name))

    MessageBus(registry).handle(Allocate("o1"))

    assert ["E1", "E2", "E3", "E4"] == handled


def test_event_handler_failure_stops_neither_other_handlers_nor_later_events_nor_the_caller(
    logs: list[EventDict],
) -> None:
    registry = Registry()
    handled: list[tuple[str, str]] = []

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Happened("E1"))
        context.emit(Happened("E2"))
        return "done"

    @registry.register
    def fails_on_e1(event: Happened) -> None:
        if event.name == "E1":
            raise ValueError("mail server refused")
        handled.append(("fails_on_e1", event.name))

    @registry.register
    def record(event: Happened) -> None:
        handled.append(("record", event.name))

    result = MessageBus(registry).handle(Allocate("o1"))

    assert "done" == result
    assert [("record", "E1"), ("fails_on_e1", "E2"), ("record", "E2")] == handled


def test_event_handler_failure_is_logged_with_the_message_the_handler_and_the_traceback(
    logs: list[EventDict],
) -> None:
    registry = Registry()
    error = ValueError("mail server refused")

    @registry.register
    def notify(event: Allocated) -> None:
        raise error

    MessageBus(registry).handle(Allocated("o1"))

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
    assert error.__traceback__ is not None


# -- metadata ---------------------------------------------------------------------


def test_every_handler_of_a_message_sees_the_same_message_id() -> None:
    registry = Registry()
    seen: list[Metadata] = []

    @registry.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen.append(metadata)

    @registry.register
    def notify(event: Allocated, context: Context) -> None:
        seen.append(context.metadata)

    MessageBus(registry).handle(Allocated("o1"))

    assert 2 == len(seen)
    assert seen[0].message_id == seen[1].message_id


def test_message_given_to_handle_starts_a_correlation_and_has_no_cause() -> None:
    registry = Registry()
    seen: list[Metadata] = []

    @registry.register
    def allocate(cmd: Allocate, metadata: Metadata) -> str:
        seen.append(metadata)
        return "done"

    MessageBus(registry).handle(Allocate("o1"))

    [metadata] = seen
    assert (metadata.message_id, None) == (metadata.correlation_id, metadata.causation_id)
    assert metadata.created_at.utcoffset() is not None


def test_raised_event_is_caused_by_the_command_and_shares_its_correlation_id() -> None:
    registry = Registry()
    seen: dict[str, Metadata] = {}

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        seen["command"] = context.metadata
        context.emit(Allocated(cmd.orderid))
        return "done"

    @registry.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen["event"] = metadata

    MessageBus(registry).handle(Allocate("o1"))

    command, event = seen["command"], seen["event"]
    assert (command.message_id, command.correlation_id) == (
        event.causation_id,
        event.correlation_id,
    )
    assert command.message_id != event.message_id


def test_every_retry_attempt_sees_the_same_message_id(waits: list[float]) -> None:
    registry = Registry()
    seen: list[Metadata] = []

    @registry.register
    def allocate(cmd: Allocate, metadata: Metadata) -> str:
        seen.append(metadata)
        if len(seen) < 3:
            raise TimeoutError("database busy")
        return "done"

    MessageBus(registry, sleep=waits.append).handle(Allocate("o1"))

    assert 3 == len(seen)
    assert {seen[0].message_id} == {metadata.message_id for metadata in seen}


def test_metadata_given_to_handle_is_the_metadata_of_the_message() -> None:
    registry = Registry()
    given = Metadata.new()
    seen: dict[str, Metadata] = {}

    @registry.register(uow=False)
    def allocate(cmd: Allocate, metadata: Metadata, context: Context) -> str:
        seen["command"] = metadata
        context.emit(Allocated(cmd.orderid))
        return "done"

    @registry.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen["event"] = metadata

    MessageBus(registry).handle(Allocate("o1"), metadata=given)

    assert given == seen["command"]
    assert (given.message_id, given.correlation_id) == (
        seen["event"].causation_id,
        seen["event"].correlation_id,
    )


def test_metadata_given_with_an_event_is_the_metadata_of_the_event() -> None:
    registry = Registry()
    given = Metadata.new()
    seen: list[Metadata] = []

    @registry.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen.append(metadata)

    MessageBus(registry).handle(Allocated("o1"), metadata=given)

    assert [given] == seen


def test_emitting_what_is_not_an_event_is_refused() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocate("o2"))  # type: ignore[arg-type]
        return "done"

    with pytest.raises(NotAMessageError) as caught:
        MessageBus(registry).handle(Allocate("o1"))

    assert Allocate("o2") == caught.value.value
    assert "Context.emit()" in str(caught.value)


# -- logs ---------------------------------------------------------------------------


def test_an_attempt_logs_one_event_with_the_message_its_metadata_and_its_handler(
    logs: list[EventDict],
) -> None:
    registry = Registry()
    seen: list[Metadata] = []

    @registry.register(uow=False)
    def allocate(cmd: Allocate, metadata: Metadata, context: Context) -> str:
        seen.append(metadata)
        context.emit(Allocated(cmd.orderid))
        return "done"

    @registry.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen.append(metadata)

    MessageBus(registry).handle(Allocate("o1"))

    command, event = seen
    expected = [
        {
            "event": "message_handled",
            "log_level": "info",
            "outcome": "succeeded",
            "message_name": "Allocate",
            "message_id": str(command.message_id),
            "correlation_id": str(command.message_id),
            "causation_id": None,
            "handler": full_name(allocate),
            "attempt": 1,
            "payload": {"orderid": "o1"},
        },
        {
            "event": "message_handled",
            "log_level": "info",
            "outcome": "succeeded",
            "message_name": "Allocated",
            "message_id": str(event.message_id),
            "correlation_id": str(command.message_id),
            "causation_id": str(command.message_id),
            "handler": full_name(record),
            "attempt": 1,
            "payload": {"orderid": "o1"},
        },
    ]
    assert expected == [{key: entry.get(key) for key in expected[0]} for entry in logs]
    assert all(isinstance(entry["duration_ms"], float) for entry in logs)
    assert all(entry["duration_ms"] >= 0 for entry in logs)


def filtered_at_warning() -> typing.Any:
    return structlog.wrap_logger(
        None, wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )


def test_successes_build_no_log_event_when_info_is_filtered_out(
    logs: list[EventDict], monkeypatch: pytest.MonkeyPatch
) -> None:
    dumped: list[object] = []
    dump_payload = Serializer.dump_payload

    def counting_dump_payload(self: Serializer, message: typing.Any) -> dict[str, typing.Any]:
        dumped.append(message)
        return dump_payload(self, message)

    monkeypatch.setattr(Serializer, "dump_payload", counting_dump_payload)
    registry = Registry()

    @registry.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        return "done"

    @registry.register(uow=False)
    def on_happened(event: Happened, context: Context) -> None:
        context.emit(Allocated(event.name))

    @registry.register
    def record(event: Allocated, uow: FakeUnitOfWork, metadata: Metadata) -> None:
        return None

    bus = MessageBus(registry, uow=FakeUnitOfWork, logger=filtered_at_warning())
    bus.handle(Allocate("o1"))
    bus.handle(Happened("o2"))

    assert ([], []) == (dumped, logs)


def test_failures_are_logged_when_info_is_filtered_out(logs: list[EventDict]) -> None:
    registry = Registry()

    @registry.register
    def record(event: Allocated) -> None:
        raise ValueError("disk full")

    MessageBus(registry, logger=filtered_at_warning()).handle(Allocated("o1"))

    assert [("message_failed", {"orderid": "o1"})] == [
        (entry["event"], entry["payload"]) for entry in logs
    ]


# -- threads ------------------------------------------------------------------------


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
