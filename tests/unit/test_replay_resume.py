"""A replay that can be resumed: killed midway and run again with its checkpoint, it
handles only what it had not handled (DESIGN.md §6; the checkpoint is by line)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog

from messagebus import AsyncMessageBus, Command, Context, Event, MessageBus, Registry
from messagebus.cli import main
from messagebus.replay import CheckpointError, checkpoint_of, replay

HERE = __name__


@attrs.frozen
class Register(Command[None]):
    user: str


@attrs.frozen
class Registered(Event):
    user: str


#: What the application did, and at which user a kill comes (before it is handled).
HANDLED: list[str] = []
KILL_AT: set[str] = set()


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    HANDLED.clear()
    KILL_AT.clear()
    yield
    HANDLED.clear()
    KILL_AT.clear()


def make_bus() -> MessageBus:
    registry = Registry()

    @registry.register(uow=False)
    def register(command: Register, context: Context) -> None:
        if command.user in KILL_AT:
            KILL_AT.discard(command.user)
            raise KeyboardInterrupt  # the process is stopped between two messages
        HANDLED.append(command.user)
        context.emit(Registered(command.user))

    @registry.register(uow=False)
    def welcome(event: Registered) -> None:
        HANDLED.append(f"welcome {event.user}")

    return MessageBus(registry, logger=structlog.wrap_logger(structlog.ReturnLogger()))


def lines_of(user: str) -> list[str]:
    """The log lines of one registration: the command's, then its event's."""
    command_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    common = {"created_at": "2024-05-01T12:00:00+00:00", "attempt": 1, "outcome": "succeeded"}
    return [
        json.dumps(
            {
                "event": "message_handled",
                "message_name": "Register",
                "message_id": command_id,
                "correlation_id": command_id,
                "causation_id": None,
                "payload": {"user": user},
                **common,
            }
        ),
        json.dumps(
            {
                "event": "message_handled",
                "message_name": "Registered",
                "message_id": event_id,
                "correlation_id": command_id,
                "causation_id": command_id,
                "payload": {"user": user},
                **common,
            }
        ),
    ]


USERS = [f"u{n}" for n in range(10)]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "app.log"
    path.write_text("\n".join(line for user in USERS for line in lines_of(user)) + "\n")
    return path


def every_one_once() -> list[str]:
    return sorted([*USERS, *(f"welcome {user}" for user in USERS)])


def test_a_killed_replay_resumed_from_its_checkpoint_handles_everything_once(
    log: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "replay.checkpoint"
    bus = make_bus()
    KILL_AT.add("u6")

    with pytest.raises(KeyboardInterrupt):
        replay(log, bus, checkpoint=checkpoint)
    resumed = replay(log, bus, checkpoint=checkpoint, resume=True)

    assert every_one_once() == sorted(HANDLED)
    assert 4 == resumed.replayed
    assert {"replayed_before": 6, "raised_event": 10} == resumed.skipped_by_reason
    assert 19 == checkpoint_of(checkpoint)  # the line of the last command: u9's


def test_the_command_line_keeps_a_checkpoint_and_resume_reads_it(log: Path) -> None:
    KILL_AT.add("u3")
    app = ["--app", f"{HERE}:make_bus"]

    killed = main(["replay", str(log), *app])
    again = main(["replay", str(log), *app])  # without --resume: refused
    resumed = main(["replay", str(log), "--resume", *app])

    assert (130, 2, 0) == (killed, again, resumed)
    assert every_one_once() == sorted(HANDLED)
    assert not Path(f"{log}.checkpoint").exists()  # the whole log was replayed


def test_without_resume_a_left_checkpoint_is_refused_and_named(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    KILL_AT.add("u3")
    app = ["--app", f"{HERE}:make_bus"]
    main(["replay", str(log), *app])
    capsys.readouterr()

    assert 2 == main(["replay", str(log), *app])

    error = capsys.readouterr().err
    assert f"its checkpoint {log}.checkpoint notes the messages handled, up to line 5" in error
    assert "--resume" in error


def test_a_checkpoint_of_another_log_is_refused(log: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.log"
    other.write_text(log.read_text())
    checkpoint = tmp_path / "replay.checkpoint"
    replay(other, make_bus(), checkpoint=checkpoint)

    with pytest.raises(CheckpointError, match="checkpoint of another log"):
        replay(log, make_bus(), checkpoint=checkpoint, resume=True)


def test_resume_without_a_checkpoint_is_an_error(log: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        replay(log, make_bus(), checkpoint=tmp_path / "none", resume=True)
    with pytest.raises(CheckpointError, match="needs the checkpoint"):
        replay(log, make_bus(), resume=True)


def test_a_dry_run_or_lines_keep_no_checkpoint(log: Path, tmp_path: Path) -> None:
    checkpoint: Any = tmp_path / "c"
    with pytest.raises(CheckpointError, match="dry run"):
        replay(log, make_bus(), checkpoint=checkpoint, dry_run=True)
    with pytest.raises(CheckpointError, match="log file"):
        replay(log.read_text().splitlines(), make_bus(), checkpoint=checkpoint)


def test_a_checkpoint_cut_midline_counts_only_whole_lines(log: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "c"
    header = json.dumps({"log": str(log.resolve()), "size": log.stat().st_size})
    checkpoint.write_text(f"{header}\n1\n3\n5")  # the kill cut "5" before its newline

    noted = checkpoint_of(checkpoint)
    resumed = replay(log, make_bus(), checkpoint=checkpoint, resume=True)

    assert 3 == noted
    assert 8 == resumed.replayed  # u2..u9: u2 at line 5 was not noted whole
    assert 19 == checkpoint_of(checkpoint)


def test_a_file_that_is_not_a_checkpoint_or_a_log_that_shrank_is_refused(
    log: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_text("not a checkpoint\n")
    checkpoint = tmp_path / "c"
    header = json.dumps({"log": str(log.resolve()), "size": log.stat().st_size + 1})
    checkpoint.write_text(header + "\n")

    with pytest.raises(CheckpointError, match="not a checkpoint"):
        replay(log, make_bus(), checkpoint=garbage, resume=True)
    with pytest.raises(CheckpointError, match="shorter"):
        replay(log, make_bus(), checkpoint=checkpoint, resume=True)


def test_a_bad_line_before_the_checkpoint_is_not_reported_again(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("\n".join(["garbage", *lines_of("u0"), *lines_of("u1")]) + "\n")
    checkpoint = tmp_path / "c"
    KILL_AT.add("u1")
    with pytest.raises(KeyboardInterrupt):
        replay(log, make_bus(), checkpoint=checkpoint)

    resumed = replay(log, make_bus(), checkpoint=checkpoint, resume=True)

    assert [] == resumed.problems
    assert 1 == resumed.replayed
    assert ["u0", "u1", "welcome u0", "welcome u1"] == sorted(HANDLED)


def test_an_async_replay_is_resumed_as_well(log: Path, tmp_path: Path) -> None:
    registry = Registry()

    @registry.register(uow=False)
    async def register(command: Register) -> None:
        if command.user in KILL_AT:
            KILL_AT.discard(command.user)
            raise KeyboardInterrupt
        if command.user == "u8":
            raise ValueError("refused")
        HANDLED.append(command.user)

    bus = AsyncMessageBus(registry, logger=structlog.wrap_logger(structlog.ReturnLogger()))
    checkpoint = tmp_path / "c"
    KILL_AT.add("u4")

    with pytest.raises(KeyboardInterrupt):
        replay(log, bus, checkpoint=checkpoint)
    resumed = replay(log, bus, checkpoint=checkpoint, resume=True)

    assert [u for u in USERS if u != "u8"] == sorted(HANDLED)
    assert 1 == resumed.handling_failed
