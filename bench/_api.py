"""What an implementation module gives the worker: a :class:`Case` per scenario.

Standard library only: this module is imported in every peer's environment.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["sync", "async", "threads"]


class NotApplicable(Exception):
    """The implementation lacks what the scenario needs; reported as n/a with the reason."""

    status = "n/a"


#: Why the peers have no S8: it is a comparison with the floor, not with other libraries.
S8_NOT_APPLICABLE = (
    "S8 is messagebus's own allocation example against the same transactions "
    "written by hand: the framework's overhead, not a comparison with peers"
)


class NotAvailableYet(NotApplicable):
    """The scenario or implementation is planned but does not exist yet."""

    status = "not available yet"


class Tally:
    """Counts handler calls, so that the worker can check that every operation dispatched.

    Handlers call :attr:`hit` (a C-level counter: one call costs about as much
    as incrementing an attribute, and it is atomic under threads).
    """

    __slots__ = ("_count", "hit")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.hit: Callable[[], int] = self._count.__next__

    def read(self) -> int:
        """The number of hits so far; each read counts as one hit."""
        return next(self._count)


@dataclass
class Case:
    """One scenario set up for one implementation, ready to be timed.

    Attributes:
        stmt: The statement timed, as users would write it (``bus.handle(cmd)``).
            For ``async`` cases it is the body of a coroutine and awaits itself
            (``await mediator.send(cmd)``).
        namespace: The globals the statement runs in.
        kind: ``sync`` (timeit), ``async`` (the statement awaited in a loop,
            inside one event loop), or ``threads`` (the statement run by
            ``threads`` threads at once; wall time divided by operations).
        tally: Counts handler calls; with ``calls_per_op`` the worker checks
            that every timed operation called every handler.
        calls_per_op: Handler calls one operation makes.
        check: Run once before timing; raises if the statement does not do
            its work (a wrong result, a handler not called).
        threads: For ``threads`` cases, how many threads share the bus.
        note: Shown beside the result (how the implementation was set up).
        loop: For ``async`` cases, the event loop the statement runs in.
        teardown: Run after timing (close files, remove temporary ones).
        min_target: The least seconds a repeat lasts, whatever the run's
            target: for operations of milliseconds (S8), so that even a quick
            run's repeat holds several of them.
    """

    stmt: str
    namespace: dict[str, Any]
    kind: Kind = "sync"
    tally: Tally | None = None
    calls_per_op: int = 0
    check: Callable[[], None] | None = None
    threads: int = 1
    note: str | None = None
    loop: Any = None
    teardown: Callable[[], None] | None = None
    min_target: float = 0.0


def expect(actual: object, expected: object, what: str) -> None:
    """Raise when a set-up check fails (``assert`` would vanish under ``-O``)."""
    if actual != expected:
        raise RuntimeError(f"benchmark set-up check failed: {what}: {actual!r} != {expected!r}")
