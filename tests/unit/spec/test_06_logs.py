"""DESIGN.md §6, Logs: what each handler attempt logs, on both buses.

Each attempt logs one event with the message, its metadata, the handler, the
attempt, its outcome and duration; a logger that filters INFO out costs
successes nothing, and a line that cannot be written changes no outcome.
How ``configure_logging`` writes those lines is tested in
``tests/unit/test_logging.py``.
"""

from __future__ import annotations

import typing
from typing import Any
from uuid import UUID

import attrs
import pytest
import structlog
import tenacity
from structlog.typing import EventDict

from messagebus import Command, Context, Event, Metadata, RetryPolicy, Serializer
from messagebus.testing import FakeClock

from ._buses import Harness
from ._loggers import PlainLogger, filtered_at_warning, unwritable_logger


@attrs.frozen
class Allocate(Command[str]):
    sku: str


@attrs.frozen
class Allocated(Event):
    sku: str


@attrs.frozen
class Happened(Event):
    name: str


def full_name(handler: typing.Callable[..., object]) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


def test_an_attempt_logs_one_event_with_the_message_its_metadata_and_its_handler(
    h: Harness, logs: list[EventDict], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Metadata] = []
    # A clock that only the handlers move: each attempt's duration is then known exactly.
    clock = FakeClock()

    @h.register(uow=False)
    def allocate(cmd: Allocate, metadata: Metadata, context: Context) -> str:
        seen.append(metadata)
        context.emit(Allocated(cmd.sku))
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
            "payload": {"sku": "o1"},
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
            "payload": {"sku": "o1"},
        },
    ]
    assert expected == [{key: entry.get(key) for key in expected[0]} for entry in logs]
    assert [250.0, 125.0] == [entry["duration_ms"] for entry in logs]
    assert [float, float] == [type(entry["duration_ms"]) for entry in logs]


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

    assert [("message_failed", {"sku": "o1"})] == [
        (entry["event"], entry["payload"]) for entry in logs
    ]


def test_a_logger_without_bind_gets_every_field_of_every_attempt(h: Harness) -> None:
    logger = PlainLogger()

    @h.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        if cmd.sku == "broken":
            raise ValueError("bug")
        return "ok"

    h.build(logger=logger, uow=None, retry=RetryPolicy(stop=tenacity.stop_after_attempt(2)))
    h.handle(Allocate("lamp"))
    with pytest.raises(ValueError, match="bug"):
        h.handle(Allocate("broken"))

    assert [("info", "message_handled"), ("error", "message_failed")] == [
        (level, event) for level, event, _ in logger.lines
    ]
    for _, _, fields in logger.lines:
        assert {
            "message_name": "Allocate",
            "message_kind": "command",
            "message_version": 1,
            "handler": f"{__name__}.test_a_logger_without_bind_gets_every_field_of_every_attempt"
            ".<locals>.allocate",
        }.items() <= fields.items()
    # And those of each attempt.
    assert [("succeeded", 1, {"sku": "lamp"}), ("failed", 1, {"sku": "broken"})] == [
        (fields["outcome"], fields["attempt"], fields["payload"]) for _, _, fields in logger.lines
    ]
    for _, _, fields in logger.lines:
        assert {"message_id", "correlation_id", "causation_id", "created_at", "duration_ms"} <= (
            fields.keys()
        )


def test_a_log_line_that_cannot_be_written_changes_no_outcome(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    # A processor that raises, or a log file closed under a bus built before:
    # the attempt succeeded (and committed) all the same, its events follow.
    logger = unwritable_logger()
    handled: list[str] = []
    attempts: list[int] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise TimeoutError("busy")  # retried: a retry line, then a success line
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register(uow=False)
    def on_allocated(event: Allocated) -> None:
        handled.append(event.sku)
        raise ValueError("bug")  # given up on: a failure line

    h.build(logger=logger, uow=None)

    assert "ok" == h.handle(Allocate("lamp"))
    assert ["lamp"] == handled
    err = capsys.readouterr().err
    for event in ("message_attempt_failed", "message_handled", "message_failed"):
        assert f"messagebus: could not write the log line '{event}': OSError" in err


def test_a_failure_is_logged_with_its_message_id_and_time_when_successes_are_not(
    h: Harness,
) -> None:
    lines: list[dict[str, Any]] = []

    def keep(logger: Any, method: str, event: dict[str, Any]) -> str:
        lines.append(event)
        return ""

    @h.register(uow=False, retry=RetryPolicy(stop=tenacity.stop_after_attempt(1)))
    def allocate(cmd: Allocate, context: Context) -> str:
        raise ValueError("bug")

    logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[keep],
        wrapper_class=structlog.make_filtering_bound_logger(40),
    )
    h.build(logger=logger, uow=None)
    with pytest.raises(ValueError, match="bug"):
        h.handle(Allocate("lamp"))

    (failed,) = lines
    assert "message_failed" == failed["event"]
    assert failed["message_id"] == failed["correlation_id"]
    assert UUID(failed["message_id"]).version == 4
    assert failed["created_at"].endswith("+00:00")
