"""This project's MessageBus, set up as its README and docs show."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs
import structlog

from bench._api import Case, NotApplicable, expect
from bench.impls import _mbapp as app
from bench.impls._domain import ORDERID, QTY, SKU
from messagebus import Command, MessageBus, Registry
from messagebus.testing import FakeUnitOfWork, InMemoryRepository

ROOT = Path(__file__).resolve().parents[2]


def versions() -> dict[str, str]:
    """This project's version and commit, and those of its dependencies."""
    described = version("messagebus")
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
    if variant == "json":
        fd, name = tempfile.mkstemp(prefix="messagebus-bench-", suffix=".jsonl")
        stream = os.fdopen(fd, "w")
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.WriteLoggerFactory(file=stream),
            cache_logger_on_first_use=True,
        )
        return stream, name
    raise NotApplicable(f"unknown logging variant {variant!r}")


LOG_NOTE = "add_log_level, TimeStamper(iso, utc), JSONRenderer, WriteLoggerFactory"


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
    stream, name = cleanup

    def teardown() -> None:
        stream.close()
        os.unlink(name)

    return teardown


def setup(scenario: str, variant: str | None) -> Case:
    cleanup = configure_logs(variant if scenario == "S5" else None)
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
        note=LOG_NOTE if variant == "json" and scenario == "S5" else None,
    )
