"""This project's MessageBus, set up as its README and docs show.

S1-S3 run in each logging set-up of ``bench/_catalogue.py``'s ``SETUPS``
besides the tuned one; ``configure_logs`` says what each is.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs
import structlog

import messagebus
from bench._api import Case, NotApplicable, expect
from bench._catalogue import ALONE, LINES_PER_OPERATION, SETUPS
from bench.impls import _mbapp as app
from bench.impls._domain import ORDERID, QTY, SKU
from messagebus import Command, MessageBus, Registry, Serializer
from messagebus.logging import configure_logging, reset_logging
from messagebus.testing import FakeUnitOfWork, InMemoryRepository

ROOT = Path(__file__).resolve().parents[2]

#: The variants that are logging set-ups (S5's, and S1-S3's ``SETUPS``).
LOGGING_VARIANTS = frozenset({"filtered", "stdlib-filtered", *SETUPS})


def versions() -> dict[str, str]:
    """This project's version and commit, and those of its dependencies."""
    described = messagebus.__version__
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    found = {"messagebus": f"{described} ({commit})" if commit else described}
    found.update(
        (name, version(name))
        for name in ("attrs", "cattrs", "structlog", "tenacity", "sqlalchemy", "aiosqlite")
    )
    return found


@dataclass
class Logs:
    """How a job configured logging: the file its lines go to, if any."""

    path: str | None = None

    def lines(self) -> int:
        """The lines written to :attr:`path` so far."""
        if self.path is None:
            return 0
        with open(self.path, "rb") as log:
            return sum(1 for _ in log)

    def expect_lines(self, scenario: str, before: int) -> None:
        """At INFO, check that one operation logged a line per attempt since
        ``before`` lines (the other set-ups have no file)."""
        if self.path is not None:
            expect(
                self.lines() - before, LINES_PER_OPERATION[scenario], "lines one operation logged"
            )

    def teardown(self) -> None:
        reset_logging()
        if self.path is not None:
            os.unlink(self.path)


def configure_logs(variant: str | None) -> Logs:
    """Configure logging for a job, in its fresh process, as the set-up says.

    No variant is the tuned set-up, every scenario's own: structlog filters
    out everything (above CRITICAL), as the peers log nothing. The others are
    the set-ups the docs show (``SETUPS``) and S5's, configured by hand.
    Nothing reaches the terminal: lines go to a temporary file, and the worker
    sends the process's stdout and stderr to another.
    """
    if variant is None:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
        return Logs()
    if variant == "unconfigured":
        # What an application that configures nothing gets: structlog's and
        # the standard library's defaults, and whatever the bus makes of them.
        return Logs()
    if variant == "filtered":
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        return Logs()
    if variant == "stdlib-filtered":
        # structlog over the standard library, configured by hand: the level
        # can change at run time, so the bus has to ask for it.
        logging.getLogger("messagebus").setLevel(logging.WARNING)
        structlog.configure(
            processors=[
                structlog.stdlib.filter_by_level,
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.stdlib.BoundLogger,
            logger_factory=structlog.stdlib.LoggerFactory(),
            cache_logger_on_first_use=True,
        )
        return Logs()
    if variant in ("warning-stdlib", "warning-direct"):
        # The docs' production set-up at WARNING, to stderr (a file here).
        configure_logging(json=True, level="WARNING", stdlib=variant == "warning-stdlib")
        return Logs()
    if variant in (*ALONE, *ALONE.values()):
        # Every attempt logged, as replay needs: JSON lines appended to a file,
        # through the standard library's logging (the default) or not.
        fd, name = tempfile.mkstemp(prefix="messagebus-bench-", suffix=".jsonl")
        os.close(fd)
        configure_logging(json=True, path=name, stdlib=variant.endswith("-stdlib"))
        return Logs(name)
    raise NotApplicable(f"unknown logging variant {variant!r}")


def logging_variant(variant: str | None) -> str | None:
    """The logging set-up of a job (S6's variants are sizes, not set-ups)."""
    return variant if variant in LOGGING_VARIANTS else None


#: The lines one operation of S1-S3 logs at INFO, one per attempt: the
#: message (a name in the statement's namespace), its type and kind, the
#: handler, and the message whose id is the line's correlation id.
_LINES = {
    "S1": [("cmd", "Allocate", "command", "allocate", "cmd")],
    "S2": [("event", "OrderPlaced", "event", f"on_placed_{n}", "event") for n in (1, 2, 3)],
    "S3": [
        ("cmd", "Allocate", "command", "allocate_and_emit", "cmd"),
        ("allocated", "Allocated", "event", "on_allocated", "cmd"),
    ],
}


def structlog_alone(scenario: str, logs: Logs) -> Case:
    """The INFO lines of one operation of S1-S3, written by structlog alone: no bus.

    What logging the attempts would cost if messagebus added nothing to
    structlog's own making and writing of the same lines, in the same
    configuration. Each line's logger is bound to its handler's fields once,
    as the bus binds one per handler when it is built; the payload is dumped
    per line, as the bus dumps it; the ids and the creation time are text made
    once (the bus makes them per message).
    """
    if scenario not in _LINES:
        raise NotApplicable(f"no lines by structlog alone for {scenario}")
    serializer = Serializer([app.Allocate, app.Allocated, app.OrderPlaced])
    namespace: dict[str, Any] = {
        "cmd": app.Allocate(ORDERID, SKU, QTY),
        "event": app.OrderPlaced(ORDERID, SKU, QTY),
        "allocated": app.Allocated(ORDERID, SKU, QTY),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "dump_payload": serializer.dump_payload,
    }
    ids = {name: str(uuid.uuid4()) for name in ("cmd", "event", "allocated")}
    statements = []
    for index, (message, name, kind, handler, cause) in enumerate(_LINES[scenario]):
        namespace[f"logger_{index}"] = structlog.get_logger("messagebus").bind(
            message_name=name,
            message_kind=kind,
            message_version=1,
            handler=f"bench.impls._mbapp.{handler}",
        )
        namespace[f"id_{index}"] = ids[message]
        namespace[f"correlation_{index}"] = ids[cause]
        namespace[f"causation_{index}"] = None if cause == message else ids[cause]
        statements.append(
            f'logger_{index}.info("message_handled", outcome="succeeded", '
            f"message_id=id_{index}, correlation_id=correlation_{index}, "
            f"causation_id=causation_{index}, created_at=created_at, attempt=1, "
            f"duration_ms=0.001, payload=dump_payload({message}, redact=True))"
        )
    stmt = "\n".join(statements)

    def check() -> None:
        before = logs.lines()
        exec(stmt, namespace)
        logs.expect_lines(scenario, before)
        with open(str(logs.path), encoding="utf-8") as log:
            line = json.loads(log.readlines()[-1])
        expect(line["payload"], {"orderid": ORDERID, "sku": SKU, "qty": QTY}, "the line's payload")

    return Case(
        stmt,
        namespace,
        check=check,
        teardown=logs.teardown,
        note="structlog alone: the lines of one operation at INFO, no bus, same configuration",
    )


def _s6_bus(count: int) -> tuple[MessageBus, Command[str]]:
    """A bus with ``count`` command types, each handled; returns it and a command of one."""

    @attrs.frozen
    class Ping(Command[str]):
        orderid: str

    def handle_ping(cmd: Ping) -> str:
        return cmd.orderid

    # Subclasses share Ping's attrs methods (attrs would take a second per
    # thousand classes to generate their own); each is a distinct message type.
    types = [
        type(f"Ping{i}", (Ping,), {"__slots__": (), "__qualname__": f"Ping{i}"})
        for i in range(count)
    ]
    registry = Registry()
    registry.register(handle_ping, message=types, uow=False)
    return MessageBus(registry), types[count // 2](ORDERID)


def setup(scenario: str, variant: str | None) -> Case:
    setup_name = logging_variant(variant)
    logs = configure_logs(setup_name)
    if setup_name in ALONE.values():
        return structlog_alone(scenario, logs)
    if scenario == "S8":
        from bench.impls import _allocation

        return _allocation.case("messagebus")
    cmd: Any = app.Allocate(ORDERID, SKU, QTY)
    registry = Registry()
    bus: Any = None
    calls = 1
    if scenario in ("S1", "S5"):
        registry.register(app.allocate, uow=False)
        calls = 0
    elif scenario == "S2":
        for handler in (app.on_placed_1, app.on_placed_2, app.on_placed_3):
            registry.register(handler, uow=False)
        cmd = app.OrderPlaced(ORDERID, SKU, QTY)
        calls = 3
    elif scenario in ("S3", "S7"):
        registry.register(app.allocate_and_emit, uow=False)
        registry.register(app.on_allocated, uow=False)
    elif scenario == "S4":
        registry.register(app.allocate_in_uow)
        registry.register(app.on_allocated, uow=False)
        products = InMemoryRepository(key=lambda p: p.sku, items=[app.Product(SKU)])
        bus = MessageBus(registry, uow=lambda: FakeUnitOfWork(products=products))
    elif scenario == "S6":
        bus, cmd = _s6_bus(int(variant or 100))
        calls = 0
    else:
        raise NotApplicable(f"no {scenario} for messagebus")
    if bus is None:
        bus = MessageBus(registry)

    def check() -> None:
        before = logs.lines()
        result = bus.handle(cmd)
        if scenario != "S2":
            expect(result, ORDERID, "bus.handle(cmd)")
        if scenario in LINES_PER_OPERATION:
            logs.expect_lines(scenario, before)

    return Case(
        "bus.handle(cmd)",
        {"bus": bus, "cmd": cmd},
        kind="threads" if scenario == "S7" else "sync",
        threads=8,
        tally=app.TALLY if calls else None,
        calls_per_op=calls,
        check=check,
        teardown=logs.teardown,
    )
