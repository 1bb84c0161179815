"""Retry policies on tenacity, and what counts as a transient failure.

A :class:`RetryPolicy` takes tenacity's own ``stop``, ``wait`` and ``retry``
strategies as they are. The bus has a default policy and a handler may have its
own. Each attempt runs in a fresh unit of work.

By default only transient failures are retried (:func:`is_transient`); domain
errors fail at once, after one attempt.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import attrs
import tenacity
from tenacity import RetryCallState
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from .exceptions import Transient

__all__ = ["RetryPolicy", "is_transient", "retry_if_transient"]

#: SQLSTATE codes of failures that succeed when the transaction is run again:
#: serialization_failure and deadlock_detected.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})

# Recognised by class name so that no driver or SQLAlchemy needs to be imported:
# PEP 249's OperationalError (sqlite3, psycopg, ...) and SQLAlchemy's own, and
# SQLAlchemy's StaleDataError, raised when an optimistic version check fails.
_TRANSIENT_CLASS_NAMES = frozenset({"OperationalError", "StaleDataError"})


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is worth retrying in a fresh unit of work.

    True for an exception, or one it wraps (``__cause__``, or the ``orig`` of a
    SQLAlchemy ``DBAPIError``), that is:

    - a :class:`~messagebus.Transient` (an application's own retryable error);
    - a ``TimeoutError`` or ``ConnectionError``;
    - an ``OperationalError`` (PEP 249 drivers, SQLAlchemy) or SQLAlchemy's
      ``StaleDataError`` (a failed optimistic version check);
    - a database error with SQLSTATE 40001 (serialisation failure) or 40P01
      (deadlock), as psycopg (``sqlstate``) and psycopg2 (``pgcode``) report it;
    - a SQLAlchemy error whose connection was invalidated.

    ``__context__`` (an exception raised while another was being handled) is
    not followed: a domain error raised in an ``except`` block stays a domain error.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    pending: list[BaseException] = []
    while current is not None:
        if id(current) not in seen:
            seen.add(id(current))
            if _is_transient_itself(current):
                return True
            orig = getattr(current, "orig", None)
            if isinstance(orig, BaseException):
                pending.append(orig)
            if current.__cause__ is not None:
                pending.append(current.__cause__)
        current = pending.pop() if pending else None
    return False


def _is_transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, (Transient, TimeoutError, ConnectionError)):
        return True
    if getattr(exc, "connection_invalidated", False) is True:
        return True
    for attribute in ("sqlstate", "pgcode"):
        if getattr(exc, attribute, None) in TRANSIENT_SQLSTATES:
            return True
    return any(cls.__name__ in _TRANSIENT_CLASS_NAMES for cls in type(exc).__mro__)


class retry_if_transient(retry_base):
    """A tenacity retry strategy: retry failures that :func:`is_transient` accepts.

    Args:
        also: Further exception types to retry.
    """

    def __init__(self, also: tuple[type[BaseException], ...] = ()) -> None:
        self.also = also

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        return exc is not None and (isinstance(exc, self.also) or is_transient(exc))

    def __repr__(self) -> str:
        return f"retry_if_transient(also={self.also!r})"


def _default_stop() -> stop_base:
    return tenacity.stop_after_attempt(3)


def _default_wait() -> wait_base:
    return tenacity.wait_exponential(multiplier=0.05, max=1.0) + tenacity.wait_random(0, 0.05)


def _default_retry() -> retry_base:
    return retry_if_transient()


StopStrategy = stop_base | Callable[[RetryCallState], bool]
WaitStrategy = wait_base | Callable[[RetryCallState], float | int]
RetryStrategy = retry_base | Callable[[RetryCallState], bool]


@attrs.frozen
class RetryPolicy:
    """When to retry a failed handler attempt, and how long to wait between attempts.

    Any tenacity strategy works as it is::

        RetryPolicy(
            stop=tenacity.stop_after_attempt(5) | tenacity.stop_after_delay(10),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=2),
            retry=messagebus.retry_if_transient(also=(MyError,)),
        )

    The default makes at most 3 attempts, waits about 50 ms then 100 ms
    between them (exponential, with up to 50 ms of jitter, never more than
    1 s), and retries only transient failures.
    """

    stop: StopStrategy = attrs.field(factory=_default_stop)
    wait: WaitStrategy = attrs.field(factory=_default_wait)
    retry: RetryStrategy = attrs.field(factory=_default_retry)

    @classmethod
    def no_retries(cls) -> RetryPolicy:
        """A policy that makes one attempt only."""
        return cls(stop=tenacity.stop_after_attempt(1))


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def uses_clock(stop: Any) -> bool:
    """Whether a stop strategy may depend on time (so the first attempt must be timed).

    Only the strategies known to count attempts alone are exempt; anything
    else, custom callables included, is assumed to read the clock.
    """
    if isinstance(stop, (tenacity.stop_after_attempt, tenacity.stop.stop_never.__class__)):
        return False
    if isinstance(stop, (tenacity.stop_any, tenacity.stop_all)):
        return any(uses_clock(inner) for inner in stop.stops)
    return True


class _RetryController:
    """Decides, after each failed attempt, whether to try again and after how long.

    Made only when a first attempt fails, so the success path builds no
    tenacity objects. It drives tenacity's strategies in tenacity's own order
    (retry, wait, stop) and leaves the waiting to its caller, so that the sync
    bus sleeps and an async bus awaits.
    """

    __slots__ = ("_clock", "_policy", "_state")

    def __init__(
        self,
        policy: RetryPolicy,
        first_started: float,
        first_error: BaseException,
        clock: Callable[[], float],
    ):
        self._policy = policy
        self._clock = clock
        retrying = tenacity.Retrying(stop=policy.stop, wait=policy.wait, retry=policy.retry)
        state = RetryCallState(retrying, fn=None, args=(), kwargs={})
        state.start_time = first_started
        self._state = state
        self.failed(first_error)

    @property
    def attempt(self) -> int:
        """The number of the attempt that failed last."""
        return self._state.attempt_number

    def next_wait(self) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        state = self._state
        policy = self._policy
        if not policy.retry(state):
            return None
        state.upcoming_sleep = float(policy.wait(state))
        if policy.stop(state):
            return None
        state.idle_for += state.upcoming_sleep
        state.next_action = tenacity.RetryAction(state.upcoming_sleep)
        return state.upcoming_sleep

    async def next_wait_async(self) -> float | None:
        """:meth:`next_wait` for the async bus: strategies may be coroutines,
        as tenacity's ``AsyncRetrying`` allows."""
        state = self._state
        policy = self._policy
        if not await _maybe_await(policy.retry(state)):
            return None
        state.upcoming_sleep = float(await _maybe_await(policy.wait(state)))
        if await _maybe_await(policy.stop(state)):
            return None
        state.idle_for += state.upcoming_sleep
        state.next_action = tenacity.RetryAction(state.upcoming_sleep)
        return state.upcoming_sleep

    def started(self) -> None:
        """Record that the next attempt has started."""
        self._state.prepare_for_next_attempt()

    def failed(self, error: BaseException) -> None:
        """Record that the current attempt failed, and when (on the bus's clock)."""
        state = self._state
        state.set_exception((type(error), error, error.__traceback__))
        state.outcome_timestamp = self._clock()
