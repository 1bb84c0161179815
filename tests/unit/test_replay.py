"""messagebus.replay (DESIGN.md §6): logged messages handled again, each once, with
their original ids; bad lines reported by number; nothing named by a log imported."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.abc
import io
import json
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog

from messagebus import (
    AsyncMessageBus,
    Command,
    Context,
    Event,
    MessageBus,
    Metadata,
    Registry,
    Transient,
    sensitive,
)
from messagebus.replay import LineProblem, ReplayReport, replay, replay_async

# -- an application: accounts, opened and credited ----------------------------------


@attrs.frozen
class Open(Command[None]):
    account: str


@attrs.frozen
class Deposit(Command[None]):
    account: str
    amount: int


@attrs.frozen
class Opened(Event):
    account: str


@attrs.frozen
class Deposited(Event):
    account: str
    amount: int


@attrs.frozen
class Card(Command[None]):
    account: str
    number: str = sensitive()


@attrs.frozen
class Pin(Command[None]):
    account: str
    pin: int = sensitive()


class UnknownAccount(Exception):
    pass


class Busy(Transient):
    pass


@attrs.define
class Bank:
    """The application's state, and what its handlers saw."""

    balances: dict[str, int] = attrs.Factory(dict)
    handled: list[tuple[str, Any, Metadata]] = attrs.Factory(list)
    busy_once: set[str] = attrs.Factory(set)

    def saw(self, handler: str, message: Any, metadata: Metadata) -> None:
        self.handled.append((handler, message, metadata))

    def by(self, handler: str) -> list[tuple[Any, Metadata]]:
        return [(m, md) for h, m, md in self.handled if h == handler]


def registry(bank: Bank) -> Registry:
    registry = Registry()

    @registry.register(uow=False)
    def open_account(command: Open, context: Context, metadata: Metadata) -> None:
        bank.saw("open", command, metadata)
        bank.balances[command.account] = 0
        context.emit(Opened(command.account))

    @registry.register(uow=False)
    def deposit(command: Deposit, context: Context, metadata: Metadata) -> None:
        bank.saw("deposit", command, metadata)
        if command.account not in bank.balances:
            raise UnknownAccount(command.account)
        if command.account in bank.busy_once:
            bank.busy_once.discard(command.account)
            raise Busy("try again")
        bank.balances[command.account] += command.amount
        context.emit(Deposited(command.account, command.amount))

    @registry.register(uow=False)
    def welcome(event: Opened, metadata: Metadata) -> None:
        bank.saw("welcome", event, metadata)

    @registry.register(uow=False)
    def audit(event: Opened, metadata: Metadata) -> None:
        bank.saw("audit", event, metadata)

    @registry.register(uow=False)
    def statement(event: Deposited, metadata: Metadata) -> None:
        bank.saw("statement", event, metadata)

    @registry.register(uow=False)
    def card(command: Card) -> None:
        pass

    @registry.register(uow=False)
    def pin(command: Pin) -> None:
        pass

    return registry


def json_logger(out: io.StringIO) -> Any:
    """What ``configure_logging(json=True)`` writes, without configuring structlog."""
    return structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def quiet() -> Any:
    return structlog.wrap_logger(structlog.ReturnLogger(), processors=[])


def bus_for(bank: Bank, logger: Any = None) -> MessageBus:
    return MessageBus(registry(bank), logger=logger or quiet(), sleep=lambda _: None)


def run(*messages: Command[Any] | Event, bank: Bank | None = None) -> tuple[Bank, list[str]]:
    """Handle messages as an application would, logging JSON lines; the state and the log."""
    bank = bank if bank is not None else Bank()
    out = io.StringIO()
    bus = bus_for(bank, json_logger(out))
    for message in messages:
        with contextlib.suppress(UnknownAccount):
            bus.handle(message)
    return bank, out.getvalue().splitlines()


def record(name: str, payload: object, **fields: Any) -> str:
    """One attempt record, as the bus logs it."""
    message_id = str(uuid.uuid4())
    data = {
        "event": "message_handled",
        "message_name": name,
        "message_kind": "command",
        "message_id": message_id,
        "correlation_id": message_id,
        "causation_id": None,
        "created_at": "2024-05-01T12:00:00+00:00",
        "handler": "app.handler",
        "attempt": 1,
        "outcome": "succeeded",
        "payload": payload,
    }
    data.update(fields)
    return json.dumps(data)


def kinds(problems: Sequence[LineProblem]) -> list[tuple[int, str]]:
    return [(problem.line, problem.kind) for problem in problems]


def accounted(report: ReplayReport) -> bool:
    return report.read == report.replayed + report.skipped + report.failed


# -- what is replayed ---------------------------------------------------------------


def test_replaying_a_log_into_an_empty_application_rebuilds_its_state() -> None:
    original, log = run(Open("a"), Deposit("a", 5), Open("b"), Deposit("b", 7), Deposit("a", 1))

    again = Bank()
    report = replay(log, bus_for(again))

    assert {"a": 6, "b": 7} == original.balances == again.balances
    assert [m for _, m, _ in original.handled] == [m for _, m, _ in again.handled]
    assert 5 == report.replayed
    assert report.ok
    assert accounted(report)


def test_replayed_messages_keep_their_original_ids_and_creation_time() -> None:
    original, log = run(Open("a"), Deposit("a", 5))

    again = Bank()
    report = replay(log, bus_for(again))

    assert original.by("open") == again.by("open")
    assert original.by("deposit") == again.by("deposit")
    assert [md for _, md in original.by("deposit")] == [r.metadata for r in report.messages[1:]]


def test_events_raised_again_are_caused_by_the_original_message() -> None:
    original, log = run(Open("a"), Deposit("a", 5))

    again = Bank()
    replay(log, bus_for(again))

    (_, deposit), (_, deposited) = again.by("deposit")[0], again.by("statement")[0]
    assert deposit.message_id == deposited.causation_id
    assert deposit.correlation_id == deposited.correlation_id
    assert original.by("statement")[0][1].causation_id == deposited.causation_id


def test_the_report_gives_the_line_each_message_came_from() -> None:
    _, log = run(Open("a"), Deposit("a", 5))

    report = replay(log, bus_for(Bank()))

    assert [(1, Open("a")), (4, Deposit("a", 5))] == [
        (replayed.line, replayed.message) for replayed in report.messages
    ]
    for replayed in report.messages:
        line = json.loads(log[replayed.line - 1])
        assert str(replayed.metadata.message_id) == line["message_id"]
        assert replayed.message.__class__.__name__ == line["message_name"]


def test_each_message_is_replayed_once_though_it_has_a_line_per_handler_and_attempt() -> None:
    bank = Bank(busy_once={"a"})
    _, log = run(Open("a"), Deposit("a", 5), bank=bank)  # Opened has two handlers; a retry
    assert 6 == len(log)  # open, welcome, audit, deposit (retrying), deposit, statement

    again = Bank()
    report = replay(log, bus_for(again))

    assert 2 == report.replayed
    assert {"repeat": 2, "raised_event": 2} == report.skipped_by_reason
    assert 1 == len(again.by("welcome")) == len(again.by("audit"))
    assert {"a": 5} == again.balances


def test_raised_events_are_left_to_their_handlers_unless_asked_for() -> None:
    _, log = run(Open("a"))

    again = Bank()
    report = replay(log, bus_for(again), include_events=True)

    assert [Open("a"), Opened("a")] == [r.message for r in report.messages]
    assert 2 == len(again.by("welcome"))  # raised by open_account, then replayed


def test_a_root_event_is_replayed_like_a_command() -> None:
    _, log = run(Opened("a"))

    again = Bank()
    report = replay(log, bus_for(again))

    assert [Opened("a")] == [r.message for r in report.messages]
    assert 1 == len(again.by("welcome")) == len(again.by("audit"))


def test_only_the_types_asked_for_by_name_or_by_class() -> None:
    _, log = run(Open("a"), Deposit("a", 5), Open("b"))

    by_name = replay(log, bus_for(Bank()), types=["Open"], dry_run=True)
    by_class = replay(log, bus_for(Bank()), types=[Deposit], dry_run=True)

    assert [Open("a"), Open("b")] == [r.message for r in by_name.messages]
    assert [Deposit("a", 5)] == [r.message for r in by_class.messages]
    assert 1 == by_name.skipped_by_reason["type"]


def test_a_type_the_bus_does_not_know_is_refused_before_reading() -> None:
    with pytest.raises(ValueError, match="Opn"):
        replay([], bus_for(Bank()), types=["Opn"])


def test_only_the_time_range_asked_for_on_created_at() -> None:
    times = ["2024-05-01T09:00:00+00:00", "2024-05-01T12:00:00+02:00", "2024-05-01T11:00:00Z"]
    log = [record("Open", {"account": str(n)}, created_at=t) for n, t in enumerate(times)]

    report = replay(
        log,
        bus_for(Bank()),
        since=dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc),
        until=dt.datetime(2024, 5, 1, 11, tzinfo=dt.timezone.utc),
        dry_run=True,
    )

    # 12:00+02:00 is 10:00 UTC, in the range; until is exclusive.
    assert [Open("1")] == [r.message for r in report.messages]
    assert {"time": 2} == report.skipped_by_reason


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        replay([], bus_for(Bank()), since=dt.datetime(2024, 5, 1))


def test_failed_only_replays_the_messages_whose_handling_failed() -> None:
    original, log = run(Open("a"), Deposit("nobody", 5), Deposit("a", 2), Deposit("ghost", 1))
    assert {"a": 2} == original.balances

    again = Bank(balances={"nobody": 0})  # fixed since: the account exists
    report = replay(log, bus_for(again), failed_only=True)

    assert [Deposit("nobody", 5)] == [r.message for r in report.messages]
    assert [Deposit("nobody", 5), Deposit("ghost", 1)] == [m for m, _ in again.by("deposit")]
    assert {"nobody": 5} == again.balances
    assert 2 == report.skipped_by_reason["not_failed"]
    assert ["handling_failed"] == [p.kind for p in report.problems]  # ghost fails again


def test_a_dry_run_builds_every_message_and_dispatches_none() -> None:
    _, log = run(Open("a"), Deposit("a", 5))

    again = Bank()
    report = replay(log, bus_for(again), dry_run=True)

    assert report.dry_run
    assert [Open("a"), Deposit("a", 5)] == [r.message for r in report.messages]
    assert 2 == report.replayed
    assert [] == again.handled


# -- bad lines ----------------------------------------------------------------------


def test_bad_lines_are_reported_by_number_and_the_rest_goes_on() -> None:
    log = [
        record("Open", {"account": "a"}),
        "not json at all",
        "[1, 2, 3]",
        record("Close", {"account": "a"}),
        record("Deposit", {"account": "a", "amount": "5"}),
        record("Deposit", {"account": "a"}),
        record("Deposit", {"account": "a", "amount": 5, "extra": True}),
        record("Open", {"account": "b"}, message_id="not-a-uuid"),
        record("Open", {"account": "c"}, created_at="yesterday"),
        record("Open", {"account": "d"}, created_at="2024-05-01T12:00:00"),
        record("Open", {"account": "e"}, correlation_id=42),
        record("Open", "a string payload"),
        '{"message_name": "Open", "message_id": "7',
        record("Open", {"account": "z"}),
    ]

    again = Bank()
    report = replay(log, bus_for(again))

    assert [
        (2, "malformed"),
        (3, "malformed"),
        (4, "unknown_message"),
        (5, "invalid_payload"),
        (6, "invalid_payload"),
        (7, "invalid_payload"),
        (8, "invalid_record"),
        (9, "invalid_record"),
        (10, "invalid_record"),
        (11, "invalid_record"),
        (12, "invalid_payload"),
        (13, "malformed"),
    ] == kinds(report.problems)
    assert {"a": 0, "z": 0} == again.balances
    assert (2, 12, 0) == (report.replayed, report.bad_lines, report.handling_failed)
    assert accounted(report)


def test_problems_say_what_is_wrong_and_where() -> None:
    log = [record("Deposit", {"account": "a", "amount": "5"}), "oops"]

    first, second = replay(log, bus_for(Bank())).problems

    assert str(first).startswith("line 1: ")
    assert "Deposit.amount" in first.detail
    assert "Deposit" == first.message_name
    assert first.message_id is not None
    assert "line 2: not JSON" in str(second)
    assert "oops" in second.detail


def test_strict_stops_at_the_first_bad_line() -> None:
    log = [record("Open", {"account": "a"}), "oops", record("Open", {"account": "b"})]

    again = Bank()
    report = replay(log, bus_for(again), strict=True)

    assert 2 == report.stopped_at
    assert 2 == report.read
    assert {"a": 0} == again.balances
    assert accounted(report)


def test_a_failed_handling_is_reported_by_line_and_the_rest_goes_on() -> None:
    log = [record("Deposit", {"account": "ghost", "amount": 1}), record("Open", {"account": "a"})]

    again = Bank()
    report = replay(log, bus_for(again))

    (problem,) = report.problems
    assert (1, "handling_failed") == (problem.line, problem.kind)
    assert "UnknownAccount: ghost" in problem.detail
    assert {"a": 0} == again.balances
    assert (1, 1, 1) == (report.replayed, report.handling_failed, report.failed)


def test_strict_stops_at_the_first_failed_handling_too() -> None:
    log = [record("Deposit", {"account": "ghost", "amount": 1}), record("Open", {"account": "a"})]

    report = replay(log, bus_for(Bank()), strict=True)

    assert 1 == report.stopped_at
    assert 0 == report.replayed


def test_blank_lines_and_other_log_events_are_skipped_not_reported() -> None:
    log = [
        "",
        "   ",
        json.dumps({"event": "server_started", "port": 80}),
        record("Open", {"account": "a"}),
    ]

    report = replay(log, bus_for(Bank()))

    assert report.ok
    assert {"blank": 2, "not_a_record": 1} == report.skipped_by_reason


def test_a_version_in_the_record_must_be_the_registered_one() -> None:
    log = [record("Open", {"account": "a"}, message_version=2)]

    (problem,) = replay(log, bus_for(Bank())).problems

    assert "invalid_payload" == problem.kind
    assert "version 2" in problem.detail


def test_redacted_sensitive_fields_are_reported_not_replayed() -> None:
    _, log = run(Open("a"), Card("a", "4111-1111"), Pin("a", 1234))
    assert "4111-1111" not in "".join(log)

    report = replay(log, bus_for(Bank()))

    assert ["redacted", "redacted"] == [p.kind for p in report.problems]
    assert [Open("a")] == [r.message for r in report.messages]


def test_a_sensitive_field_written_in_clear_by_another_tool_is_replayed() -> None:
    report = replay([record("Card", {"account": "a", "number": "4111"})], bus_for(Bank()))

    assert [Card("a", "4111")] == [r.message for r in report.messages]


class ImportWatcher(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        self.asked.append(fullname)


@pytest.fixture
def imports() -> Iterator[list[str]]:
    watcher = ImportWatcher()
    sys.meta_path.insert(0, watcher)
    try:
        yield watcher.asked
    finally:
        sys.meta_path.remove(watcher)


def test_nothing_named_by_a_log_is_imported_or_evaluated(imports: list[str]) -> None:
    log = [
        record("replay_canary.Boom", {}),
        record("os:system", {"command": "touch /tmp/replayed"}),
        record("__import__('replay_canary')", {}),
        record(
            "Open", {"account": "a"}, message_kind="replay_canary.Kind", handler="replay_canary.h"
        ),
    ]

    report = replay(log, bus_for(Bank()))

    assert [(1, "unknown_message"), (2, "unknown_message"), (3, "unknown_message")] == kinds(
        report.problems
    )
    assert [] == [name for name in imports if "replay_canary" in name]
    assert "replay_canary" not in sys.modules


# -- sources ------------------------------------------------------------------------


def test_a_log_file_is_read_by_path_as_bytes(tmp_path: Path) -> None:
    _, log = run(Open("a"), Deposit("a", 5))
    path = tmp_path / "app.log"
    path.write_bytes(("\n".join(log) + "\n").encode() + b"\xff\xfe not utf-8\n")

    again = Bank()
    report = replay(path, bus_for(again))

    assert {"a": 5} == again.balances
    assert [(len(log) + 1, "malformed")] == kinds(report.problems)
    assert replay(str(path), bus_for(Bank())).replayed == 2


def test_lines_given_as_bytes_work_like_text() -> None:
    _, log = run(Open("a"))

    report = replay([line.encode() for line in log], bus_for(Bank()))

    assert 1 == report.replayed


def test_progress_is_told_in_bytes_up_to_the_total(tmp_path: Path) -> None:
    _, log = run(*(Open(str(n)) for n in range(3000)))
    path = tmp_path / "app.log"
    path.write_text("\n".join(log) + "\n")
    seen: list[tuple[int, int]] = []

    replay(path, bus_for(Bank()), progress=lambda done, total: seen.append((done, total)))
    size = path.stat().st_size
    assert len(seen) >= 3
    assert (size, size) == seen[-1]
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)

    seen.clear()
    replay(path, bus_for(Bank()), failed_only=True, progress=lambda d, t: seen.append((d, t)))
    assert (2 * size, 2 * size) == seen[-1]  # read twice

    seen.clear()
    replay(log, bus_for(Bank()), progress=lambda d, t: seen.append((d, t)))
    assert 0 == seen[-1][1]  # lines: the total is unknown


def test_a_bus_logging_into_the_log_it_replays_does_not_feed_itself(tmp_path: Path) -> None:
    _, log = run(Open("a"), Deposit("a", 5))
    path = tmp_path / "app.log"
    path.write_text("\n".join(log) + "\n")

    with path.open("a") as appended:
        bus = MessageBus(registry(Bank()), logger=json_logger(appended))  # type: ignore[arg-type]
        report = replay(path, bus, include_events=True)

    assert len(log) == report.read
    assert len(path.read_text().splitlines()) > len(log)


def test_the_messages_need_not_be_kept_for_a_large_log() -> None:
    _, log = run(Open("a"), Open("b"))

    report = replay(log, bus_for(Bank()), keep_messages=False)

    assert (2, []) == (report.replayed, report.messages)
    assert 2 == replay(log, async_bus(Bank()), keep_messages=False).replayed


def test_bytes_are_not_a_source() -> None:
    with pytest.raises(TypeError, match="not bytes"):
        replay(b"{}", bus_for(Bank()))  # type: ignore[arg-type]


def test_failed_only_reads_an_iterator_of_lines_twice() -> None:
    _, log = run(Deposit("ghost", 1), Open("a"))

    report = replay(iter(log), bus_for(Bank(balances={"ghost": 0})), failed_only=True)

    assert [Deposit("ghost", 1)] == [r.message for r in report.messages]


# -- the log lines of a replay --------------------------------------------------------


def test_log_lines_of_a_replay_name_the_line_and_log_they_came_from(tmp_path: Path) -> None:
    _, log = run(Open("a"))
    path = tmp_path / "app.log"
    path.write_text("\n".join(log) + "\n")

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as entries:
        replay(path, MessageBus(registry(Bank())))

    lines = [e for e in entries if e["event"] == "message_handled"]
    assert 3 == len(lines)
    assert {(1, str(path))} == {(e["replay_line"], e["replay_log"]) for e in lines}
    assert json.loads(log[0])["message_id"] == lines[0]["message_id"]
    assert {} == structlog.contextvars.get_contextvars()


# -- the async bus ------------------------------------------------------------------


def async_bus(bank: Bank) -> AsyncMessageBus:
    registry = Registry()

    @registry.register(uow=False)
    async def open_account(command: Open, metadata: Metadata) -> None:
        bank.saw("open", command, metadata)
        bank.balances[command.account] = 0

    @registry.register(uow=False)
    async def deposit(command: Deposit) -> None:
        raise UnknownAccount(command.account)

    return AsyncMessageBus(registry, logger=quiet())


def test_an_async_bus_is_replayed_into_with_asyncio_run() -> None:
    original, log = run(Open("a"), Open("b"), Deposit("a", 1))

    again = Bank()
    report = replay(log, async_bus(again))

    assert original.by("open") == again.by("open")
    deposit_line = next(n for n, line in enumerate(log, 1) if '"Deposit"' in line)
    assert [(deposit_line, "handling_failed")] == kinds(report.problems)


def test_replay_async_is_awaited_inside_an_event_loop() -> None:
    _, log = run(Open("a"))
    again = Bank()

    async def main() -> ReplayReport:
        with pytest.raises(RuntimeError, match="replay_async"):
            replay(log, async_bus(again))
        return await replay_async(log, async_bus(again), strict=True)

    report = asyncio.run(main())

    assert 1 == report.replayed
    assert {"a": 0} == again.balances


def test_replay_async_takes_only_an_async_bus() -> None:
    with pytest.raises(TypeError, match="AsyncMessageBus"):
        asyncio.run(replay_async([], bus_for(Bank())))  # type: ignore[arg-type]


# -- a large log --------------------------------------------------------------------


# -- odd records --------------------------------------------------------------------


def test_records_with_fields_of_the_wrong_kind_are_bad_lines() -> None:
    log = [
        json.dumps({"message_name": "Open", "message_id": 7, "payload": {}}),
        record("Open", {"account": "a"}, message_version="1"),
        record("Opened", {"account": "a"}, causation_id=5),
        record("Open", {"account": "b"}, created_at=1714561200),
    ]

    report = replay(log, bus_for(Bank()), include_events=True)

    assert [
        (1, "invalid_record"),
        (2, "invalid_record"),
        (3, "invalid_record"),
        (4, "invalid_record"),
    ] == kinds(report.problems)
    assert "message_version '1'" in report.problems[1].detail


def test_a_single_type_name_may_be_given_alone() -> None:
    _, log = run(Open("a"), Deposit("a", 1))

    report = replay(log, bus_for(Bank()), types="Deposit", dry_run=True)

    assert [Deposit("a", 1)] == [r.message for r in report.messages]


@attrs.frozen
class Holder:
    name: str
    secret: str = sensitive()


@attrs.frozen
class Enrol(Command[None]):
    holders: tuple[Holder, ...]
    note: str = ""


def test_sensitive_fields_redacted_in_nested_classes_are_found() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def enrol(command: Enrol) -> None:
        pass

    out = io.StringIO()
    MessageBus(registry, logger=json_logger(out)).handle(Enrol((Holder("ada", "s3cret"),)))
    log = out.getvalue().splitlines()
    assert "s3cret" not in log[0]
    # Written by another tool: the secret in clear, and the marker as a plain value.
    clear = record("Enrol", {"holders": [{"name": "bob", "secret": "x"}], "note": "[redacted]"})

    report = replay([*log, clear], MessageBus(registry, logger=quiet()))

    assert [(1, "redacted")] == kinds(report.problems)
    assert [Enrol((Holder("bob", "x"),), "[redacted]")] == [r.message for r in report.messages]


def test_failed_only_ignores_lines_it_cannot_read_when_looking_for_failures() -> None:
    _, log = run(Deposit("ghost", 1), Open("a"))
    log = ['{"outcome": "failed", ', '["failed"]', *log]

    report = replay(log, bus_for(Bank(balances={"ghost": 0})), failed_only=True)

    assert [Deposit("ghost", 1)] == [r.message for r in report.messages]
    assert [(1, "malformed"), (2, "malformed")] == kinds(report.problems)


def test_an_async_replay_can_be_dry_and_strict() -> None:
    log = [record("Deposit", {"account": "a", "amount": 1}), record("Open", {"account": "b"})]
    again = Bank()

    dry = replay(log, async_bus(again), dry_run=True)
    strict = replay(log, async_bus(again), strict=True)

    assert 2 == dry.replayed
    assert (1, 0) == (strict.stopped_at, strict.replayed)
    assert {} == again.balances
