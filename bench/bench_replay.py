"""Replay throughput, in log lines per second: ``python bench/bench_replay.py``.

A standalone script (not a timed test). It writes a JSON-lines log of
``--lines`` attempt records (100,000 by default) by running a real bus whose
handlers do no I/O, with the bus's own attempt records rendered as
``messagebus.logging.configure_logging(json=True)`` renders them, then times
:func:`messagebus.replay.replay` on that file, best of ``--repeat`` runs.

Two logs are measured:

- ``mixed``: each command's handler raises an event, handled by one handler:
  two lines per command, of which the replay dispatches one (the event is
  raised again by the command's handler).
- ``roots``: every line a command without events: every line is parsed,
  built into a message and dispatched. The worst case.

The bus replayed into does not log its attempts (its logger is set to
WARNING): what is measured is reading, checking, building and dispatching,
not the writing of a new log. The target is at least 50,000 lines/s.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import structlog

from messagebus import Command, Context, Event, MessageBus, Registry
from messagebus.replay import replay

TARGET = 50_000


@attrs.frozen
class Allocate(Command[None]):
    orderid: str
    sku: str
    qty: int


@attrs.frozen
class Allocated(Event):
    orderid: str
    sku: str
    qty: int
    batchref: str


@attrs.frozen
class Reserve(Command[None]):
    orderid: str
    sku: str
    qty: int


def registry() -> Registry:
    registry = Registry()

    @registry.register(uow=False)
    def allocate(command: Allocate, context: Context) -> None:
        context.emit(Allocated(command.orderid, command.sku, command.qty, "batch-001"))

    @registry.register(uow=False)
    def record_allocation(event: Allocated) -> None:
        pass

    @registry.register(uow=False)
    def reserve(command: Reserve) -> None:
        pass

    return registry


def json_logger(file: Any) -> Any:
    """A structlog logger writing what ``configure_logging(json=True)`` writes, quicker."""
    return structlog.wrap_logger(
        structlog.WriteLogger(file),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


def quiet_logger() -> Any:
    return structlog.make_filtering_bound_logger(logging.WARNING)(structlog.PrintLogger(), [], {})


def write_log(path: Path, lines: int, kind: str) -> None:
    with path.open("w", encoding="utf-8") as file:
        bus = MessageBus(registry(), logger=json_logger(file))
        if kind == "mixed":
            for n in range(lines // 2):
                bus.handle(Allocate(f"order-{n}", "RED-CHAIR", n % 10 + 1))
        else:
            for n in range(lines):
                bus.handle(Reserve(f"order-{n}", "RED-CHAIR", n % 10 + 1))
    count = sum(1 for _ in path.open("rb"))
    assert count == lines, (count, lines)


def measure(path: Path, repeat: int) -> tuple[float, int, int]:
    """The best lines/s of ``repeat`` replays, with the lines read and messages replayed."""
    best = 0.0
    read = replayed = 0
    for _ in range(repeat):
        bus = MessageBus(registry(), logger=quiet_logger())
        started = time.perf_counter()
        report = replay(path, bus)
        elapsed = time.perf_counter() - started
        assert report.ok, report.problems[:3]
        read, replayed = report.read, report.replayed
        best = max(best, read / elapsed)
    return best, read, replayed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000, help="lines in each log")
    parser.add_argument("--repeat", type=int, default=5, help="replays of each log (best kept)")
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}; {args.lines:,} lines; best of {args.repeat}")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="messagebus-bench-replay-") as folder:
        for kind in ("mixed", "roots"):
            path = Path(folder) / f"{kind}.log"
            write_log(path, args.lines, kind)
            rate, read, replayed = measure(path, args.repeat)
            results[kind] = rate
            print(
                f"{kind:>6}: {rate:>10,.0f} lines/s  "
                f"({read:,} lines read, {replayed:,} messages replayed)"
            )
    verdict = "meets" if results["mixed"] >= TARGET else "misses"
    print(f"target {TARGET:,} lines/s (mixed log): {verdict} it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
