"""In-process wake-ups: a commit of outbox rows tells this process's relays at once.

A unit of work that committed outbox rows calls :func:`wake_relays`; each
running relay has registered a waker (an ``Event.set``, or a thread-safe call
into its event loop) with :func:`add_waker`. A waker must be quick and must
not raise: it runs in the committing thread.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

_wakers: dict[int, Callable[[], None]] = {}
_lock = threading.Lock()
_handles = itertools.count(1)


def add_waker(waker: Callable[[], None]) -> int:
    """Call ``waker`` after each commit of outbox rows in this process; returns a handle."""
    with _lock:
        handle = next(_handles)
        _wakers[handle] = waker
    return handle


def remove_waker(handle: int) -> None:
    """Stop calling the waker of ``handle``."""
    with _lock:
        _wakers.pop(handle, None)


def wake_relays() -> None:
    """Tell this process's relays that outbox rows were committed."""
    with _lock:
        wakers = list(_wakers.values())
    for waker in wakers:
        waker()
