"""A clock that tests move by hand, given to a bus as ``clock=``."""

from __future__ import annotations

import threading


class FakeClock:
    """Times that move only when a test moves them (or at each reading, by ``tick``).

    Give it to a bus, ``MessageBus(registry, clock=FakeClock())``: messages'
    creation times come from :meth:`time_ns`, durations and time-based retry
    stops from :meth:`perf_counter`.

    Args:
        start: The wall-clock time, in seconds since the epoch (UTC).
        tick: Seconds added after each reading of either clock (0: none).
    """

    def __init__(self, start: float = 1_700_000_000.0, *, tick: float = 0.0) -> None:
        self._ns = int(start * 1_000_000_000)
        self._elapsed_ns = 0
        self._tick_ns = int(tick * 1_000_000_000)
        self._lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        with self._lock:
            step = int(seconds * 1_000_000_000)
            self._ns += step
            self._elapsed_ns += step

    def time_ns(self) -> int:
        """The wall-clock time in nanoseconds since the epoch, as :func:`time.time_ns`."""
        with self._lock:
            now = self._ns
            self._ns += self._tick_ns
            self._elapsed_ns += self._tick_ns
            return now

    def perf_counter(self) -> float:
        """Seconds on a monotonic clock, as :func:`time.perf_counter`."""
        with self._lock:
            elapsed = self._elapsed_ns
            self._ns += self._tick_ns
            self._elapsed_ns += self._tick_ns
            return elapsed / 1_000_000_000

    def __repr__(self) -> str:
        return f"FakeClock(time_ns={self._ns}, perf_counter={self._elapsed_ns / 1e9})"
