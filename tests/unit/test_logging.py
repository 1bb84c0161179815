"""messagebus.logging (DESIGN.md §6): JSON lines in production, a console in development,
structlog and the standard library's logging in one format."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog

from messagebus import Command, Context, Event, MessageBus, Registry, sensitive
from messagebus.logging import configure_logging, reset_logging

CARD = "4111-1111-1111-1111"


@attrs.frozen
class Pay(Command[None]):
    order: str
    amount: int
    card: str = sensitive()


@attrs.frozen
class Paid(Event):
    order: str


class Declined(Exception):
    pass


def make_bus() -> MessageBus:
    registry = Registry()

    @registry.register(uow=False)
    def pay(command: Pay, context: Context) -> None:
        if command.amount < 0:
            raise Declined(f"amount {command.amount}")
        context.emit(Paid(command.order))

    @registry.register(uow=False)
    def receipt(event: Paid) -> None:
        pass

    return MessageBus(registry)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test configures logging its own way; the next one finds it as it was."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    reset_logging()  # closes what configure_logging opened
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.configure(**config)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_hold_one_object_per_attempt_with_every_field() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out, cache_loggers=False)

    make_bus().handle(Pay("o1", 3, CARD))

    command, event = json_lines(out.getvalue())
    assert {
        "event": "message_handled",
        "level": "info",
        "logger": "messagebus",
        "message_name": "Pay",
        "message_kind": "command",
        "causation_id": None,
        "handler": f"{__name__}.make_bus.<locals>.pay",
        "attempt": 1,
        "outcome": "succeeded",
        "payload": {"order": "o1", "amount": 3, "card": "[redacted]"},
    }.items() <= command.items()
    assert command["message_id"] == command["correlation_id"]
    assert {"created_at", "duration_ms", "timestamp"} <= command.keys()
    assert command["timestamp"].endswith("Z")
    assert "Paid" == event["message_name"]
    assert command["message_id"] == event["causation_id"]


def test_sensitive_fields_are_never_written_in_clear_even_with_a_traceback() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out, cache_loggers=False)

    with pytest.raises(Declined):
        make_bus().handle(Pay("o1", -1, CARD))

    (failed,) = json_lines(out.getvalue())
    assert "message_failed" == failed["event"]
    assert "error" == failed["level"]
    assert "Declined: amount -1" == failed["error"]
    assert "Traceback (most recent call last)" in failed["exception"]
    assert CARD not in out.getvalue()


def test_the_console_is_readable_and_shows_no_sensitive_field_nor_locals() -> None:
    out = io.StringIO()
    configure_logging(json=False, stream=out, cache_loggers=False)

    make_bus().handle(Pay("o1", 3, CARD))
    with pytest.raises(Declined):
        make_bus().handle(Pay("o2", -1, CARD))

    text = out.getvalue()
    first = text.splitlines()[0]
    assert "message_handled" in first
    assert "message_name=Pay" in first
    assert not first.lstrip().startswith("{")
    assert "Declined: amount -1" in text
    assert CARD not in text


def test_by_default_a_terminal_gets_the_console_and_anything_else_json() -> None:
    terminal, pipe = Terminal(), io.StringIO()

    configure_logging(stream=terminal, cache_loggers=False)
    structlog.get_logger("app").info("started", port=80)
    configure_logging(stream=pipe, cache_loggers=False)
    structlog.get_logger("app").info("started", port=80)

    assert "started" in terminal.getvalue()
    assert not terminal.getvalue().lstrip().startswith("{")
    assert "\x1b[" in terminal.getvalue()  # colours, for a terminal
    assert {"event": "started", "port": 80}.items() <= json.loads(pipe.getvalue()).items()


def test_standard_library_records_come_out_in_the_same_format() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out, cache_loggers=False)

    logging.getLogger("sqlalchemy.engine").warning("slow query: %s ms", 250)

    (record,) = json_lines(out.getvalue())
    assert {
        "event": "slow query: 250 ms",
        "level": "warning",
        "logger": "sqlalchemy.engine",
    }.items() <= record.items()
    assert "timestamp" in record


def test_the_level_filters_structlog_events_and_records_alike() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out, level="WARNING", cache_loggers=False)

    make_bus().handle(Pay("o1", 3, CARD))  # successes are logged at INFO
    logging.getLogger("other").info("not shown")
    with pytest.raises(Declined):
        make_bus().handle(Pay("o2", -1, CARD))

    assert ["message_failed"] == [line["event"] for line in json_lines(out.getvalue())]


def test_context_bound_with_contextvars_is_on_every_line() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out, cache_loggers=False)

    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        make_bus().handle(Pay("o1", 3, CARD))

    assert ["r-1", "r-1"] == [line.get("request_id") for line in json_lines(out.getvalue())]


def test_extra_processors_run_before_rendering() -> None:
    out = io.StringIO()

    def add_service(logger: object, name: str, event: dict[str, Any]) -> dict[str, Any]:
        event["service"] = "payments"
        return event

    configure_logging(json=True, stream=out, processors=[add_service], cache_loggers=False)
    structlog.get_logger().info("started")
    logging.getLogger("other").info("also")

    assert ["payments", "payments"] == [line["service"] for line in json_lines(out.getvalue())]


def test_a_path_is_appended_to_in_utf8(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text('{"event": "before"}\n', encoding="utf-8")

    handler = configure_logging(json=True, path=log, cache_loggers=False)
    structlog.get_logger().info("café")
    handler.flush()

    lines = json_lines(log.read_text(encoding="utf-8"))
    assert ["before", "café"] == [line["event"] for line in lines]


def test_a_second_call_replaces_its_handler_and_leaves_the_others() -> None:
    root = logging.getLogger()
    theirs = logging.NullHandler()
    root.addHandler(theirs)
    first, second = io.StringIO(), io.StringIO()

    old = configure_logging(json=True, stream=first, cache_loggers=False)
    new = configure_logging(json=True, stream=second, cache_loggers=False)
    structlog.get_logger().info("once")

    assert old not in root.handlers
    assert new in root.handlers
    assert theirs in root.handlers
    assert "" == first.getvalue()
    assert 1 == len(second.getvalue().splitlines())
    root.removeHandler(theirs)


def test_reset_logging_undoes_configure_logging() -> None:
    root = logging.getLogger()
    root.setLevel(logging.ERROR)
    first = configure_logging(json=True, stream=io.StringIO(), level="DEBUG", cache_loggers=False)
    second = configure_logging(json=True, stream=io.StringIO(), level="INFO", cache_loggers=False)

    reset_logging()

    assert first not in root.handlers
    assert second not in root.handlers
    assert logging.ERROR == root.level  # as it was before the first call
    assert not structlog.is_configured()
    reset_logging()  # nothing left to undo
    assert logging.ERROR == root.level


def test_a_stream_and_a_path_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="stream or a path"):
        configure_logging(stream=io.StringIO(), path=tmp_path / "app.log")


def test_the_bus_asks_the_standard_library_whether_info_is_enabled() -> None:
    # The bus skips timing and logging successes when INFO is off; with the
    # standard library behind structlog, the answer follows the logger's level.
    out = io.StringIO()
    configure_logging(json=True, stream=out, cache_loggers=False)
    bus = make_bus()

    logging.getLogger().setLevel(logging.WARNING)
    bus.handle(Pay("o1", 3, CARD))
    logging.getLogger().setLevel(logging.INFO)
    bus.handle(Pay("o2", 3, CARD))

    assert ["o2", "o2"] == [line["payload"]["order"] for line in json_lines(out.getvalue())]


def test_a_json_log_is_what_replay_reads(tmp_path: Path) -> None:
    from messagebus.replay import replay

    log = tmp_path / "app.log"
    handler = configure_logging(json=True, path=log, cache_loggers=False)
    bus = make_bus()
    bus.handle(Pay("o1", 3, "not sensitive here"))
    logging.getLogger("waitress").info("serving on port 8080")
    with pytest.raises(Declined):
        bus.handle(Pay("o2", -1, CARD))
    handler.flush()

    report = replay(log, make_bus(), dry_run=True, include_events=True)

    assert [Paid("o1")] == [replayed.message for replayed in report.messages]
    # Pay's card is redacted in the log: no Pay can be replayed from it.
    assert [(1, "redacted"), (4, "redacted")] == [(p.line, p.kind) for p in report.problems]
    assert {"not_a_record": 1} == report.skipped_by_reason


# -- stdlib=False: structlog writes the lines itself ----------------------------


def test_direct_json_lines_have_every_field_and_leave_the_root_logger_alone(
    tmp_path: Path,
) -> None:
    root = logging.getLogger()
    handlers = list(root.handlers)
    log = tmp_path / "app.log"

    assert configure_logging(json=True, path=log, stdlib=False, cache_loggers=False) is None
    make_bus().handle(Pay("o1", 3, CARD))

    command, event = json_lines(log.read_text(encoding="utf-8"))
    assert {
        "event": "message_handled",
        "level": "info",
        "message_name": "Pay",
        "message_kind": "command",
        "message_version": 1,
        "causation_id": None,
        "handler": f"{__name__}.make_bus.<locals>.pay",
        "attempt": 1,
        "outcome": "succeeded",
        "payload": {"order": "o1", "amount": 3, "card": "[redacted]"},
    }.items() <= command.items()
    assert command["message_id"] == command["correlation_id"] == event["causation_id"]
    assert command["timestamp"].endswith("Z")
    assert "logger" not in command
    assert handlers == root.handlers
    assert CARD not in log.read_text(encoding="utf-8")


def test_direct_lines_carry_the_same_ids_and_times_as_the_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from messagebus.testing import FakeClock, Recorder

    # A clock a quarter of a second on at each reading: every fourth time is a
    # whole second, which is written without a fraction.
    clock = FakeClock(1_795_428_000, tick=0.25)
    log = tmp_path / "app.log"
    configure_logging(json=True, path=log, stdlib=False, cache_loggers=False)
    recorder = Recorder()
    registry = Registry()

    @registry.register(uow=False)
    def pay(command: Pay, context: Context) -> None:
        context.emit(Paid(command.order))

    @registry.register(uow=False)
    def receipt(event: Paid) -> None:
        pass

    bus = MessageBus(registry, listeners=[recorder], clock=clock)
    for n in range(50):
        bus.handle(Pay(f"o{n}", 3, CARD))

    logged = [
        (line["message_id"], line["correlation_id"], line["causation_id"], line["created_at"])
        for line in json_lines(log.read_text(encoding="utf-8"))
    ]
    known = [
        (
            str(attempt.metadata.message_id),
            str(attempt.metadata.correlation_id),
            None if attempt.metadata.causation_id is None else str(attempt.metadata.causation_id),
            attempt.metadata.created_at.isoformat(),
        )
        for attempt in recorder.attempts
    ]
    assert known == logged
    assert [] != [created_at for *_, created_at in logged if "." not in created_at]


def test_direct_failures_are_written_with_their_traceback_and_the_level_filters(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    configure_logging(json=True, path=log, level="warning", stdlib=False, cache_loggers=False)

    make_bus().handle(Pay("o1", 3, CARD))  # INFO: filtered out
    with pytest.raises(Declined):
        make_bus().handle(Pay("o2", -1, CARD))

    (failed,) = json_lines(log.read_text(encoding="utf-8"))
    assert "message_failed" == failed["event"]
    assert "Traceback (most recent call last)" in failed["exception"]


def test_direct_json_to_a_stream_and_the_console(tmp_path: Path) -> None:
    out, terminal = io.StringIO(), Terminal()

    configure_logging(json=True, stream=out, stdlib=False, cache_loggers=False)
    make_bus().handle(Pay("o1", 3, CARD))
    configure_logging(stream=terminal, stdlib=False, cache_loggers=False)
    make_bus().handle(Pay("o2", 3, CARD))

    assert ["o1", "o1"] == [line["payload"]["order"] for line in json_lines(out.getvalue())]
    assert "message_handled" in terminal.getvalue()
    assert not terminal.getvalue().lstrip().startswith("{")
    assert CARD not in terminal.getvalue()


def test_direct_console_to_a_file_is_text(tmp_path: Path) -> None:
    log = tmp_path / "app.log"

    configure_logging(json=False, path=log, stdlib=False, cache_loggers=False)
    structlog.get_logger().info("café")
    reset_logging()

    assert "café" in log.read_text(encoding="utf-8")


def test_a_value_orjson_refuses_is_written_all_the_same(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    configure_logging(json=True, path=log, stdlib=False, cache_loggers=False)

    structlog.get_logger().info("big", number=2**70, key={1: "one"})

    (line,) = json_lines(log.read_text(encoding="utf-8"))
    assert {"number": 2**70, "key": {"1": "one"}}.items() <= line.items()


def test_a_direct_log_is_appended_to_and_is_what_replay_reads(tmp_path: Path) -> None:
    from messagebus.replay import replay

    log = tmp_path / "app.log"
    log.write_text('{"event": "before"}\n', encoding="utf-8")
    configure_logging(json=True, path=log, stdlib=False, cache_loggers=False)
    make_bus().handle(Pay("o1", 3, CARD))
    configure_logging(json=True, path=log, stdlib=False, cache_loggers=False)  # reopened
    make_bus().handle(Pay("o2", 3, CARD))
    reset_logging()

    report = replay(log, make_bus(), dry_run=True, include_events=True)

    assert [Paid("o1"), Paid("o2")] == [replayed.message for replayed in report.messages]
    assert 5 == len(log.read_text(encoding="utf-8").splitlines())


def test_without_orjson_the_standard_librarys_json_renders_the_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson raises ImportError
    log, out = tmp_path / "app.log", io.StringIO()

    configure_logging(json=True, path=log, stdlib=False, cache_loggers=False)
    structlog.get_logger().info("to a file", n=1)
    configure_logging(json=True, stream=out, stdlib=False, cache_loggers=False)
    structlog.get_logger().info("to a stream", n=2)

    assert [1] == [line["n"] for line in json_lines(log.read_text(encoding="utf-8"))]
    assert [2] == [line["n"] for line in json_lines(out.getvalue())]
    assert '"n": 2' in out.getvalue()  # the standard library's separators


def test_switching_between_direct_and_stdlib_undoes_the_other(tmp_path: Path) -> None:
    root = logging.getLogger()
    root.setLevel(logging.ERROR)
    handler = configure_logging(json=True, stream=io.StringIO(), cache_loggers=False)

    configure_logging(json=True, path=tmp_path / "app.log", stdlib=False, cache_loggers=False)

    assert handler not in root.handlers
    assert logging.ERROR == root.level


def test_an_unknown_level_name_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging(level="LOUD", stdlib=False)


def test_an_unknown_level_undoes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    configure_logging(json=True, path=log, stdlib=False, cache_loggers=False)

    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        configure_logging(json=True, path=log, level="verbose", stdlib=False)
    structlog.get_logger().info("still written")

    assert ["still written"] == [line["event"] for line in json_lines(log.read_text())]


def test_a_short_write_is_finished_so_no_line_is_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    write = os.write

    def short_write(fd: int, data: bytes) -> int:  # as a signal or a full pipe may
        return write(fd, data[:7])

    log = tmp_path / "app.log"
    configure_logging(json=True, path=log, stdlib=False, cache_loggers=False)
    monkeypatch.setattr(os, "write", short_write)
    structlog.get_logger().info("long enough to take several writes", n=1)
    monkeypatch.setattr(os, "write", write)

    (line,) = json_lines(log.read_text(encoding="utf-8"))
    assert "long enough to take several writes" == line["event"]


def test_direct_success_lines_are_byte_for_byte_what_structlog_would_write(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    configure_logging(json=True, path=log, stdlib=False)
    structlog.contextvars.bind_contextvars(request_id="r-1", message_name="shadowed")
    try:
        make_bus().handle(Pay("o1", 3, CARD))
        written = log.read_text(encoding="utf-8").splitlines()
        fields = [json.loads(line) for line in written]
        # The same events, logged by structlog itself with the same fields.
        for line in fields:
            bound = {key: line[key] for key in ("message_name", "message_kind")}
            bound |= {key: line[key] for key in ("message_version", "handler")}
            given = {
                key: value
                for key, value in line.items()
                if key not in bound and key not in ("event", "level", "timestamp", "request_id")
            }
            structlog.get_logger("messagebus").bind(**bound).info(line["event"], **given)
    finally:
        structlog.contextvars.clear_contextvars()

    lines = log.read_text(encoding="utf-8").splitlines()
    assert 4 == len(lines)
    ours, structlogs = lines[:2], lines[2:]
    assert [strip_timestamp(line) for line in structlogs] == [
        strip_timestamp(line) for line in ours
    ]
    assert ["r-1", "r-1"] == [line["request_id"] for line in fields]
    assert ["Pay", "Paid"] == [line["message_name"] for line in fields]


def strip_timestamp(line: str) -> str:
    """The line as written, but for the time it was written."""
    head, _, tail = line.partition('"timestamp":"')
    return head + tail.partition('"')[2]


def test_direct_success_lines_dropped_by_a_processor_are_not_written(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    configure_logging(json=True, path=log, stdlib=False)
    seen: list[str] = []

    def drop_successes(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        seen.append(event["event"])
        if event["event"] == "message_handled":
            raise structlog.DropEvent
        return event

    # Processors changed in place, after configure_logging: they are run all the same.
    structlog.get_config()["processors"].insert(0, drop_successes)
    bus = make_bus()
    bus.handle(Pay("o1", 3, CARD))
    with pytest.raises(Declined):
        bus.handle(Pay("o2", -1, CARD))

    assert ["message_handled", "message_handled", "message_failed"] == seen
    (failed,) = json_lines(log.read_text(encoding="utf-8"))
    assert "message_failed" == failed["event"]


def test_direct_lines_with_processors_of_the_application_are_written_by_structlog(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"

    def add_service(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["service"] = "allocation"
        return event

    configure_logging(json=True, path=log, stdlib=False, processors=[add_service])
    make_bus().handle(Pay("o1", 3, CARD))

    assert ["allocation", "allocation"] == [
        line["service"] for line in json_lines(log.read_text(encoding="utf-8"))
    ]


def test_direct_json_renders_a_stack_asked_for_and_leaves_other_lines_alone(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    configure_logging(json=True, path=log, stdlib=False, cache_loggers=False)

    structlog.get_logger("app").info("with_stack", stack_info=True)
    structlog.get_logger("app").info("without", stack_info=False, exc_info=False)

    with_stack, without = json_lines(log.read_text(encoding="utf-8"))
    # The stack ends where the line was logged, in this function.
    *_, last_frame, last_line = with_stack["stack"].splitlines()
    assert last_frame.endswith(
        ", in test_direct_json_renders_a_stack_asked_for_and_leaves_other_lines_alone"
    )
    assert 'structlog.get_logger("app").info("with_stack", stack_info=True)' == last_line.strip()
    assert "stack_info" not in with_stack
    assert {"event": "without", "level": "info"} == {
        key: value for key, value in without.items() if key != "timestamp"
    }
