"""Dispatch (DESIGN.md §3): commands, events, their order, failures, metadata and logs.

Every test but the one about threads runs against both buses (the ``h`` fixture).
"""

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
from messagebus.testing import FakeClock, FakeUnitOfWork

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


def full_name(handler: typing.Callable[..., object]) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


def named(logs: list[EventDict], event: str) -> list[EventDict]:
    return [entry for entry in logs if entry["event"] == event]


# -- commands -----------------------------------------------------------------------


def test_command_handlers_return_value_is_what_handle_returns(h: Harness) -> None:
    @h.register
    def allocate(cmd: Allocate) -> str:
        return f"batch-for-{cmd.orderid}"

    h.build(uow=None)

    assert "batch-for-o1" == h.handle(Allocate("o1"))


def test_command_handlers_return_value_is_returned_when_it_runs_in_a_unit_of_work(
    h: Harness,
) -> None:
    @h.register
    def allocate(cmd: Allocate, uow: typing.Any, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        return f"batch-for-{cmd.orderid}"

    h.build(uow=h.uow)

    assert "batch-for-o1" == h.handle(Allocate("o1"))


def test_command_failure_reaches_the_caller_as_the_handlers_own_exception_after_retries(
    h: Harness,
) -> None:
    errors = [TimeoutError("first"), TimeoutError("second"), TimeoutError("third")]
    attempts: list[int] = []

    @h.register
    def allocate(cmd: Allocate) -> str:
        attempts.append(len(attempts) + 1)
        raise errors[len(attempts) - 1]

    h.build(uow=None)
    with pytest.raises(TimeoutError) as caught:
        h.handle(Allocate("o1"))

    assert errors[-1] is caught.value
    assert [1, 2, 3] == attempts


def test_events_raised_by_a_failed_command_are_not_dispatched(h: Harness) -> None:
    handled: list[Event] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        raise ValueError("out of stock")

    @h.register
    def record(event: Allocated) -> None:
        handled.append(event)

    h.build(uow=None)
    with pytest.raises(ValueError, match="out of stock"):
        h.handle(Allocate("o1"))

    assert [] == handled


def test_command_without_a_handler_is_refused(h: Harness) -> None:
    command = Allocate("o1")
    h.build(uow=None)

    with pytest.raises(NoHandlerError) as caught:
        h.handle(command)

    assert command is caught.value.message
    assert repr(command) in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [pytest.param("Allocate o1", id="str"), pytest.param(Allocate, id="class"), 42],
)
def test_what_is_not_a_message_is_refused_naming_it(h: Harness, value: object) -> None:
    h.build(uow=None)

    with pytest.raises(NotAMessageError) as caught:
        h.handle(value)

    assert value is caught.value.value
    assert repr(value) in str(caught.value)


# -- events -----------------------------------------------------------------------


def test_event_given_to_handle_goes_to_each_of_its_handlers(h: Harness) -> None:
    calls: list[tuple[str, Event]] = []

    @h.register
    def record(event: Allocated) -> None:
        calls.append(("record", event))

    @h.register
    def notify(event: Allocated) -> None:
        calls.append(("notify", event))

    h.build(uow=None)
    result = h.handle(Allocated("o1"))

    assert None is result
    assert [("record", Allocated("o1")), ("notify", Allocated("o1"))] == calls


def test_event_without_handlers_is_handled_without_error(h: Harness) -> None:
    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        return "done"

    h.build(uow=None)

    assert "done" == h.handle(Allocate("o1"))
    assert None is h.handle(Allocated("o2"))


def test_events_are_handled_breadth_first_in_the_order_raised_before_handle_returns(
    h: Harness,
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

    h.build(uow=None)
    h.handle(Allocate("o1"))

    assert ["E1", "E2", "E3", "E4"] == handled


def test_event_handler_failure_stops_neither_other_handlers_nor_later_events_nor_the_caller(
    h: Harness, logs: list[EventDict]
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

    h.build(uow=None)
    result = h.handle(Allocate("o1"))

    assert "done" == result
    assert [("record", "E1"), ("fails_on_e1", "E2"), ("record", "E2")] == handled


def test_event_handler_failure_is_logged_with_the_message_the_handler_and_the_traceback(
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


# -- metadata ---------------------------------------------------------------------


def test_every_handler_of_a_message_sees_the_same_message_id(h: Harness) -> None:
    seen: list[Metadata] = []

    @h.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen.append(metadata)

    @h.register
    def notify(event: Allocated, context: Context) -> None:
        seen.append(context.metadata)

    h.build(uow=None)
    h.handle(Allocated("o1"))

    assert 2 == len(seen)
    assert seen[0].message_id == seen[1].message_id


def test_message_given_to_handle_starts_a_correlation_and_has_no_cause(h: Harness) -> None:
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


def test_raised_event_is_caused_by_the_command_and_shares_its_correlation_id(
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


def test_metadata_given_to_handle_is_the_metadata_of_the_message(h: Harness) -> None:
    given = Metadata.new()
    seen: dict[str, Metadata] = {}

    @h.register(uow=False)
    def allocate(cmd: Allocate, metadata: Metadata, context: Context) -> str:
        seen["command"] = metadata
        context.emit(Allocated(cmd.orderid))
        return "done"

    @h.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen["event"] = metadata

    h.build(uow=None)
    h.handle(Allocate("o1"), metadata=given)

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


def test_emitting_what_is_not_an_event_is_refused(h: Harness) -> None:
    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocate("o2"))  # type: ignore[arg-type]
        return "done"

    h.build(uow=None)
    with pytest.raises(NotAMessageError) as caught:
        h.handle(Allocate("o1"))

    assert Allocate("o2") == caught.value.value
    assert "Context.emit()" in str(caught.value)


# -- logs ---------------------------------------------------------------------------


def test_an_attempt_logs_one_event_with_the_message_its_metadata_and_its_handler(
    h: Harness, logs: list[EventDict], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Metadata] = []
    # A clock that only the handlers move: each attempt's duration is then known exactly.
    clock = FakeClock()

    @h.register(uow=False)
    def allocate(cmd: Allocate, metadata: Metadata, context: Context) -> str:
        seen.append(metadata)
        context.emit(Allocated(cmd.orderid))
        clock.advance(0.25)
        return "done"

    @h.register
    def record(event: Allocated, metadata: Metadata) -> None:
        seen.append(metadata)
        clock.advance(0.125)

    h.build(uow=None, clock=clock)
    h.handle(Allocate("o1"))

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
    assert [250.0, 125.0] == [entry["duration_ms"] for entry in logs]
    assert [float, float] == [type(entry["duration_ms"]) for entry in logs]


def filtered_at_warning() -> typing.Any:
    return structlog.wrap_logger(
        None, wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )


def test_successes_build_no_log_event_when_info_is_filtered_out(
    h: Harness, logs: list[EventDict], monkeypatch: pytest.MonkeyPatch
) -> None:
    dumped: list[object] = []
    dump_payload = Serializer.dump_payload

    def counting_dump_payload(self: Serializer, message: typing.Any) -> dict[str, typing.Any]:
        dumped.append(message)
        return dump_payload(self, message)

    monkeypatch.setattr(Serializer, "dump_payload", counting_dump_payload)

    @h.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        return "done"

    @h.register(uow=False)
    def on_happened(event: Happened, context: Context) -> None:
        context.emit(Allocated(event.name))

    @h.register
    def record(event: Allocated, uow: typing.Any, metadata: Metadata) -> None:
        return None

    h.build(uow=h.uow, logger=filtered_at_warning())
    h.handle(Allocate("o1"))
    h.handle(Happened("o2"))

    assert ([], []) == (dumped, logs)


def test_failures_are_logged_when_info_is_filtered_out(h: Harness, logs: list[EventDict]) -> None:
    @h.register
    def record(event: Allocated) -> None:
        raise ValueError("disk full")

    h.build(uow=None, logger=filtered_at_warning())
    h.handle(Allocated("o1"))

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


def test_threads_given_the_context_see_one_id_while_it_is_being_fixed() -> None:
    # Attempts not logged: the handler is called before its message has an id,
    # which is fixed when first asked for. Here a thread of the handler's asks
    # while the handler's own first request is fixing it (reading the clock).
    registry = Registry()
    seen: dict[str, Metadata] = {}
    reading = threading.Event()
    threads: list[threading.Thread] = []

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
        seen["context"] = context  # type: ignore[assignment]
        clock.asking = True
        seen["handler"] = context.metadata
        return "ok"

    def read() -> None:
        reading.set()
        seen["thread"] = seen["context"].metadata  # type: ignore[attr-defined]

    quiet = structlog.wrap_logger(
        structlog.ReturnLogger(), wrapper_class=structlog.make_filtering_bound_logger(40)
    )
    bus = MessageBus(registry, logger=quiet, clock=clock)
    assert "ok" == bus.handle(Allocate("o1"))

    threads[0].join()
    assert seen["handler"] == seen["thread"]
