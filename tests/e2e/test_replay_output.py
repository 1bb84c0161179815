"""``messagebus replay``'s own output stays readable: with neither structlog nor logging
configured by the application, stdout holds the replay's summary and nothing else; the
bus's lines (a failed handling, its traceback) go to stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

APP = textwrap.dedent(
    """
    import attrs

    from messagebus import Command, Context, Event, MessageBus, Registry


    @attrs.frozen
    class Register(Command[None]):
        user: str


    @attrs.frozen
    class Registered(Event):
        user: str


    def make_bus():
        registry = Registry()

        @registry.register(uow=False)
        def register(command: Register, context: Context) -> None:
            if command.user.startswith("bad"):
                raise ValueError(f"refused: {command.user}")
            context.emit(Registered(command.user))

        @registry.register(uow=False)
        def welcome(event: Registered) -> None:
            raise ConnectionRefusedError("the mail server is down")

        return MessageBus(registry)
    """
)


def record(user: str) -> str:
    message_id = str(uuid.uuid4())
    return json.dumps(
        {
            "event": "message_handled",
            "message_name": "Register",
            "message_id": message_id,
            "correlation_id": message_id,
            "causation_id": None,
            "created_at": "2024-05-01T12:00:00+00:00",
            "handler": "app.register",
            "attempt": 1,
            "outcome": "succeeded",
            "payload": {"user": user},
        }
    )


SUMMARY = """\
replay of app.log
┏━━━━━━━━━━━━━━━━━━━┳━━━━━━━┓
┃ lines             ┃ count ┃
┡━━━━━━━━━━━━━━━━━━━╇━━━━━━━┩
│ read              │    32 │
│ replayed          │    30 │
│ skipped           │     0 │
│ failed            │     2 │
│   bad lines       │     0 │
│   handling failed │     2 │
└───────────────────┴───────┘
"""


@pytest.mark.parametrize(
    "logger",
    ["", "logger=structlog.get_logger()"],
    ids=["nothing configured", "structlog unconfigured"],
)
def test_replay_writes_only_its_summary_to_stdout_and_the_bus_lines_to_stderr(
    tmp_path: Path, logger: str
) -> None:
    (tmp_path / "shop.py").write_text(
        "import structlog\n"
        + APP.replace("MessageBus(registry)", f"MessageBus(registry, {logger})")
    )
    (tmp_path / "app.log").write_text(
        "\n".join(record(user) for user in [f"user{n}" for n in range(30)] + ["bad1", "bad2"])
        + "\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "100"}
    env.pop("MESSAGEBUS_APP", None)

    done = subprocess.run(
        [sys.executable, "-m", "messagebus", "replay", "app.log", "--app", "shop:make_bus"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert SUMMARY.splitlines() == [line.rstrip() for line in done.stdout.splitlines()]
    # The bus's lines went to stderr: 30 welcome failures and 2 refused registrations.
    assert 30 <= done.stderr.count("the mail server is down")
    assert "refused: bad1" in done.stderr
