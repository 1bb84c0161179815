"""Handler attempts and runs of the sync bus.

GENERATED from ``_attempt_sync.py`` by ``scripts/generate_sync.py``: do not
edit; edit the async source and run ``make generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._context import MESSAGE, Envelope, metadata_of, new_context
from ._core import HandlerPlan, Shape
from ._log import default_logger
from .messages import Event
from .middleware import HandlerCall, Middleware, Next, new_call

#: What a run and an attempt return: the handler's result, and the events raised.
Outcome = tuple[Any, Any]
Run = Callable[[Envelope], Outcome]
#: The bus's ``_retry(plan, step, call, error, first_started)``.
Retry = Callable[[HandlerPlan, Next, HandlerCall, Exception, "float | None"], Outcome]
_NO_EVENTS: tuple[()] = ()


def make_run(bus: Any, plan: HandlerPlan, links: Sequence[Middleware]) -> tuple[Run, Next]:
    """The run of a handler, and the step its retries take (the chain around an attempt).

    ``bus`` provides ``_retry(plan, step, call, error, first_started)`` and ``_perf_counter``.
    """
    attempt = make_attempt(plan)
    step = compose(links, _last_step(attempt))
    retry: Retry = bus._retry
    name, kind = plan.name, plan.kind

    def first_failed(envelope: Envelope, error: Exception) -> Outcome:
        return retry(plan, step, new_call(envelope, name, kind), error, None)

    if links or plan.timed:
        clock = bus._perf_counter
        timed = plan.timed

        def run_wrapped(envelope: Envelope) -> Outcome:
            call = new_call(envelope, name, kind)
            first_started = clock() if timed else None
            try:
                result = step(call)
            except Exception as exc:
                return retry(plan, step, call, exc, first_started)
            return result, call._events

        return run_wrapped, step

    handler = plan.call
    if plan.shape is Shape.NOTHING:

        def run_bare(envelope: Envelope) -> Outcome:
            try:
                return handler(envelope[MESSAGE]), _NO_EVENTS
            except Exception as exc:
                return first_failed(envelope, exc)

        return run_bare, step

    if plan.shape is Shape.CONTEXT:

        def run_with_context(envelope: Envelope) -> Outcome:
            context = new_context(envelope, None)
            try:
                result = handler(envelope[MESSAGE], context)
            except Exception as exc:
                return first_failed(envelope, exc)
            return result, context._events

        return run_with_context, step

    def run(envelope: Envelope) -> Outcome:
        try:
            return attempt(envelope)
        except Exception as exc:
            return first_failed(envelope, exc)

    return run, step


def compose(links: Sequence[Middleware], last_step: Next) -> Next:
    """One step that runs ``links`` in order, the first outermost, around ``last_step``."""
    step = last_step
    for link in reversed(links):
        step = _link(link, step)
    return step


def _link(middleware: Middleware, call_next: Next) -> Next:
    def step(call: HandlerCall) -> Any:
        return middleware(call, call_next)

    return step


def _last_step(attempt: Run) -> Next:
    """The end of a chain: the attempt itself, its events kept on the call."""

    def step(call: HandlerCall) -> Any:
        result, call._events = attempt(call._envelope)
        return result

    return step


def make_attempt(plan: HandlerPlan) -> Run:
    """One attempt of a handler: call it in a fresh unit of work and collect its events."""
    call = plan.call
    shape = plan.shape

    if shape is Shape.NOTHING:

        def bare_attempt(envelope: Envelope) -> Outcome:
            return call(envelope[MESSAGE]), _NO_EVENTS

        return bare_attempt

    if shape is Shape.CONTEXT:

        def context_attempt(envelope: Envelope) -> Outcome:
            context = new_context(envelope, None)
            result = call(envelope[MESSAGE], context)
            return result, context._events

        return context_attempt

    uow_factory = plan.uow_factory

    if shape is Shape.UOW:
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

    uow_parameter = plan.call_plan.uow_parameter
    context_parameter = plan.call_plan.context_parameter
    metadata_parameter = plan.call_plan.metadata_parameter

    def keywords_attempt(envelope: Envelope) -> Outcome:
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

    return keywords_attempt


def _rollback_quietly(uow: Any, error: BaseException) -> None:
    """Roll back; a failing rollback must not hide the error that caused it."""
    try:
        uow.rollback()
    except Exception:
        default_logger().exception("unit_of_work_rollback_failed", original_error=repr(error))


def _close_quietly(uow: Any) -> None:
    """Close; the attempt's outcome is already decided (and maybe committed)."""
    try:
        uow.close()
    except Exception:
        default_logger().exception("unit_of_work_close_failed")
