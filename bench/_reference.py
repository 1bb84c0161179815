"""A fixed piece of interpreter work, timed beside every measurement.

On a shared machine a process may run at full speed or, while a neighbour
keeps the other hyperthread of its core busy, up to twice as slow; CPU time
does not see the difference. Timing the same small loop in every process
tells the orchestrator which measurements ran slowed down, so that it can
run them again (see ``bench/_runner.py``).
"""

from __future__ import annotations

import itertools
import time

_ITERATIONS = 20_000


class _Thing:
    __slots__ = ("name", "value")

    def __init__(self, name: str, value: int) -> None:
        self.name = name
        self.value = value


def _step(table: dict[str, int], thing: _Thing) -> list[object]:
    return [thing.name, table.get(thing.name), thing.value + 1]


def reference_ns() -> float:
    """ns per iteration of the reference loop (calls, attributes, a dict, a list), CPU time."""
    table = {"a": 1, "b": 2}
    thing = _Thing("a", 1)
    step = _step
    started = time.process_time()
    for _ in itertools.repeat(None, _ITERATIONS):
        step(table, thing)
    return (time.process_time() - started) / _ITERATIONS * 1e9


def best_reference_ns(samples: int = 15) -> float:
    """The fastest of several timings: this machine's speed when nothing slows it down."""
    return min(reference_ns() for _ in range(samples))
