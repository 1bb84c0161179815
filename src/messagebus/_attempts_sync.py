"""Handler attempts and retries, for the sync bus.

GENERATED from ``_attempts_async.py`` by ``scripts/generate_sync.py``: do not
edit; edit the async source and run ``make generate``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from ._context import MESSAGE, Envelope, metadata_of, new_context
from ._core import AttemptLog, HandlerPlan
from .messages import Event
from .retry import _RetryController

Outcome = tuple[Any, Any]
AttemptFn = Callable[[Envelope], Outcome]
_NO_EVENTS: tuple[()] = ()


def monotonic() -> float:
    return time.monotonic()  # looked up at each call, so that tests can move the clock


def retry_after(
    plan: HandlerPlan,
    envelope: Envelope,
    error: Exception,
    bus: Any,
    started: float | None = None,
    first_started: float | None = None,
) -> Outcome:
    """Go on after a failed first attempt: retry ``plan.attempt`` while the policy says so.

    ``bus`` provides ``_log`` (an :class:`AttemptLog`), ``_sleep(seconds)`` and
    ``_give_up(plan, envelope, attempts, error)``.

    ``started`` is when the first attempt started (``perf_counter``), for its
    log line; None when successes are not logged. ``first_started`` is the
    same on tenacity's clock (``monotonic``), for time-based stops; None when
    the policy's stop does not read the clock.
    """
    attempt: AttemptFn = plan.attempt
    log: AttemptLog = bus._log
    controller = _RetryController(
        plan.policy, monotonic() if first_started is None else first_started, error
    )
    while True:
        wait = controller.next_wait()
        if wait is None:
            log.failed(plan, envelope, controller.attempt, started, error)
            bus._give_up(plan, envelope, controller.attempt, error)
            raise error
        log.retrying(plan, envelope, controller.attempt, started, error, wait)
        bus._sleep(wait)
        controller.started()
        started = time.perf_counter()
        try:
            outcome = attempt(envelope)
        except Exception as exc:
            error = exc
            controller.failed(exc)
            continue
        log.succeeded(plan, envelope, controller.attempt, started)
        return outcome


def make_attempt(plan: HandlerPlan) -> AttemptFn:
    """One attempt of a handler: call it in a fresh unit of work and collect its events."""
    call = plan.call
    uow_factory = plan.uow_factory
    uow_parameter = plan.plan.uow_parameter
    context_parameter = plan.plan.context_parameter
    metadata_parameter = plan.plan.metadata_parameter

    if plan.needs_nothing:

        def bare_attempt(envelope: Envelope) -> Outcome:
            return call(envelope[MESSAGE]), _NO_EVENTS

        return bare_attempt

    if plan.context_only:
        # A handler that emits events and needs nothing else: ``(message, context)``.

        def context_attempt(envelope: Envelope) -> Outcome:
            context = new_context(envelope, None)
            result = call(envelope[MESSAGE], context)
            return result, context._events

        return context_attempt

    if plan.plan.positional == (uow_parameter,):
        # The book's handler: ``(message, uow)``.
        assert uow_factory is not None

        def uow_attempt(envelope: Envelope) -> Outcome:
            uow = uow_factory()
            try:
                result = call(envelope[MESSAGE], uow)
                uow.commit()
                events = list(uow.collect_new_events())
            except BaseException as exc:  # cancellation included: roll back, then re-raise
                _rollback_quietly(uow, exc)
                raise
            finally:
                _close_quietly(uow)
            return result, events

        return uow_attempt

    def attempt(envelope: Envelope) -> Outcome:
        uow = uow_factory() if uow_factory is not None else None
        try:
            kwargs: dict[str, Any] = {}
            context = None
            if uow_parameter is not None:
                kwargs[uow_parameter] = uow
            if context_parameter is not None:
                context = kwargs[context_parameter] = new_context(envelope, uow)
            if metadata_parameter is not None:
                kwargs[metadata_parameter] = metadata_of(envelope)
            result = call(envelope[MESSAGE], **kwargs)
            events: list[Event] = []
            if uow is not None:
                uow.commit()
                events.extend(uow.collect_new_events())
            if context is not None:
                events.extend(context._events)
        except BaseException as exc:  # cancellation included: roll back, then re-raise
            if uow is not None:
                _rollback_quietly(uow, exc)
            raise
        finally:
            if uow is not None:
                _close_quietly(uow)
        return result, events

    return attempt


def _rollback_quietly(uow: Any, error: BaseException) -> None:
    """Roll back; a failing rollback must not hide the error that caused it."""
    try:
        uow.rollback()
    except Exception:
        structlog.get_logger("messagebus").exception(
            "unit_of_work_rollback_failed", original_error=repr(error)
        )


def _close_quietly(uow: Any) -> None:
    """Close; the attempt's outcome is already decided (and maybe committed)."""
    try:
        uow.close()
    except Exception:
        structlog.get_logger("messagebus").exception("unit_of_work_close_failed")
