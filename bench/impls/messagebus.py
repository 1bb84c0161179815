"""This project's MessageBus, set up as its README and docs show."""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs
import structlog

import messagebus
from bench._api import Case, NotApplicable, expect
from bench.impls import _mbapp as app
from bench.impls._domain import ORDERID, QTY, SKU
from messagebus import Command, MessageBus, Registry
from messagebus.logging import configure_logging, reset_logging
from messagebus.messages import new_message_id
from messagebus.testing import FakeUnitOfWork, InMemoryRepository

ROOT = Path(__file__).resolve().parents[2]


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


def configure_logs(variant: str | None) -> Any:
    """Configure structlog for a scenario; returns what to clean up afterwards.

    Every scenario but S5 logs nothing at all (as the peers, which log nothing
    by default): the filter is above CRITICAL. S5 compares that with attempts
    filtered out (INFO below WARNING), and with JSON lines written to a file.
    """
    if variant is None:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
        return None
    if variant == "filtered":
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        return None
    if variant == "stdlib-filtered":
        # structlog over the standard library: the level can change at run time,
        # so the bus asks for it on each attempt.
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
        return None
    if variant in ("json", "json-stdlib", "json-structlog"):
        # As the docs show: configure_logging() to a file, through the standard
        # library's logging (its default) or with structlog writing the lines itself.
        fd, name = tempfile.mkstemp(prefix="messagebus-bench-", suffix=".jsonl")
        os.close(fd)
        configure_logging(json=True, path=name, stdlib=variant == "json-stdlib")
        return name
    raise NotApplicable(f"unknown logging variant {variant!r}")


def structlog_alone(cleanup: Any) -> Case:
    """S5's JSON line of one attempt, written by structlog alone: no bus, the same fields.

    What the logged attempt would cost if messagebus added nothing to structlog's
    own processing and writing of the line.
    """
    cmd = app.Allocate(ORDERID, SKU, QTY)
    registry = Registry()
    registry.register(app.allocate, uow=False)
    serializer = MessageBus(registry).serializer
    message_id = str(new_message_id())
    logger = structlog.get_logger("messagebus").bind(
        message_name="Allocate",
        message_kind="command",
        message_version=1,
        handler="bench.impls._mbapp.allocate",
    )
    namespace = {
        "logger": logger,
        "message_id": message_id,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "dump_payload": serializer.dump_payload,
        "cmd": cmd,
    }
    # The payload is dumped per line, as the bus dumps it; the ids and the
    # creation time are given as text made once (the bus makes them per line).
    stmt = (
        'logger.info("message_handled", outcome="succeeded", message_id=message_id, '
        "correlation_id=message_id, causation_id=None, created_at=created_at, attempt=1, "
        "duration_ms=0.001, payload=dump_payload(cmd, redact=True))"
    )

    def check() -> None:
        exec(stmt, namespace)
        with open(cleanup, encoding="utf-8") as log:
            line = json.loads(log.readlines()[-1])
        expect(line["payload"], {"orderid": ORDERID, "sku": SKU, "qty": QTY}, "the line's payload")

    return Case(
        stmt,
        namespace,
        check=check,
        teardown=log_teardown(cleanup),
        note="structlog alone: the line of one attempt, no bus (same configuration)",
    )


LOG_NOTES = {
    "json": "configure_logging(json=True, path=..., stdlib=False), orjson installed",
    "json-stdlib": "configure_logging(json=True, path=...): structlog through logging",
}


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


def log_teardown(cleanup: Any) -> Any:
    """What closes and removes S5's log file, if the scenario made one."""
    if cleanup is None:
        return None

    def teardown() -> None:
        reset_logging()
        os.unlink(cleanup)

    return teardown


def setup(scenario: str, variant: str | None) -> Case:
    cleanup = configure_logs(variant if scenario == "S5" else None)
    if scenario == "S5" and variant == "json-structlog":
        return structlog_alone(cleanup)
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
        result = bus.handle(cmd)
        if scenario != "S2":
            expect(result, ORDERID, "bus.handle(cmd)")

    return Case(
        "bus.handle(cmd)",
        {"bus": bus, "cmd": cmd},
        kind="threads" if scenario == "S7" else "sync",
        threads=8,
        tally=app.TALLY if calls else None,
        calls_per_op=calls,
        check=check,
        teardown=log_teardown(cleanup),
        note=LOG_NOTES.get(variant or "") if scenario == "S5" else None,
    )
