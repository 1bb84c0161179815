"""Handler attempts and runs of the sync bus.

GENERATED from ``_attempt_sync.py`` by ``scripts/generate_sync.py``: do not
edit; edit the async source and run ``make generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._context import DELIVERED, MESSAGE, PARENT, Envelope, metadata_of, new_context, raised_by
from ._core import HandlerPlan, Shape
from ._log import default_logger
from ._outbox import Outbox
from .exceptions import ConfigurationError, DispatchError
from .messages import Command, Event
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
    outbox: Outbox | None = bus._outbox
    attempt = make_attempt(plan, outbox, bus._uow_factory)
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

    if plan.shape is Shape.CONTEXT and outbox is None:

        def run_with_context(envelope: Envelope) -> Outcome:
            context = new_context(envelope, None)
            try:
                result = handler(envelope[MESSAGE], context)
            except Exception as exc:
                return first_failed(envelope, exc)
            events = context._events
            return result, raised_by(envelope, events) if events else _NO_EVENTS

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


def make_attempt(
    plan: HandlerPlan, outbox: Outbox | None, send_uow: Callable[[], Any] | None = None
) -> Run:
    """One attempt of a handler: call it in a fresh unit of work and collect what it raised.

    Returns ``(result, envelopes)``: the envelopes of the events it raised, from
    its unit of work's aggregates, then its context's. With an ``outbox`` (the
    bus has routes), what is routed among them, and the commands it sent, are
    staged in its unit of work before it commits; a handler without one sends
    what is routed in a unit of work of its own, made by ``send_uow``.
    """
    call = plan.call
    shape = plan.shape

    if shape is Shape.NOTHING:

        def bare_attempt(envelope: Envelope) -> Outcome:
            return call(envelope[MESSAGE]), _NO_EVENTS

        return bare_attempt

    uow_factory = plan.uow_factory

    if shape is Shape.CONTEXT:

        def context_attempt(envelope: Envelope) -> Outcome:
            context = new_context(envelope, None)
            result = call(envelope[MESSAGE], context)
            raised = raised_by(envelope, context._events) if context._events else _NO_EVENTS
            if outbox is not None and raised:
                _send_alone(outbox, send_uow, raised)
            return result, raised

        return context_attempt

    if shape is Shape.UOW:
        assert uow_factory is not None

        def uow_attempt(envelope: Envelope) -> Outcome:
            uow = uow_factory()
            try:
                if envelope[PARENT] is DELIVERED and not _claim(uow, envelope, plan.name):
                    uow.rollback()
                    return None, _NO_EVENTS  # handled before: its events went then
                result = call(envelope[MESSAGE], uow)
                raised = _commit(uow, envelope, (), None, outbox)
            except BaseException as exc:  # cancellation included: roll back, then re-raise
                rollback_quietly(uow, exc)
                raise
            finally:
                close_quietly(uow)
            return result, raised

        return uow_attempt

    uow_parameter = plan.call_plan.uow_parameter
    context_parameter = plan.call_plan.context_parameter
    metadata_parameter = plan.call_plan.metadata_parameter

    def keywords_attempt(envelope: Envelope) -> Outcome:
        uow = uow_factory() if uow_factory is not None else None
        try:
            delivered = uow is not None and envelope[PARENT] is DELIVERED
            if delivered and not _claim(uow, envelope, plan.name):
                uow.rollback()  # type: ignore[union-attr]
                return None, _NO_EVENTS  # handled before: its events went then
            kwargs: dict[str, Any] = {}
            context = None
            if uow_parameter is not None:
                kwargs[uow_parameter] = uow
            if context_parameter is not None:
                context = kwargs[context_parameter] = new_context(envelope, uow)
            if metadata_parameter is not None:
                kwargs[metadata_parameter] = metadata_of(envelope)
            result = call(envelope[MESSAGE], **kwargs)
            emitted = context._events if context is not None else ()
            if uow is not None:
                sent = context._sent if context is not None else None
                raised = _commit(uow, envelope, emitted, sent, outbox)
            else:
                raised = raised_by(envelope, emitted) if emitted else _NO_EVENTS
                if outbox is not None and raised:
                    _send_alone(outbox, send_uow, raised)
        except BaseException as exc:  # cancellation included: roll back, then re-raise
            if uow is not None:
                rollback_quietly(uow, exc)
            raise
        finally:
            if uow is not None:
                close_quietly(uow)
        return result, raised

    return keywords_attempt


def _commit(
    uow: Any,
    envelope: Envelope,
    emitted: Sequence[Event],
    sent: Sequence[Command[Any]] | None,
    outbox: Outbox | None,
) -> Sequence[Envelope]:
    """Commit the attempt's unit of work; the envelopes of the events it raised.

    Without routes, the aggregates' events are collected after the commit, as
    the unit of work's protocol says. With them, before: what is routed must be
    staged in the transaction, and a failed commit discards it all the same.
    """
    if outbox is None:
        if sent:
            raise DispatchError(
                f"{type(sent[0]).__qualname__} is not routed: say where it goes with "
                "registry.route(...) before sending it"
            )
        uow.commit()
        events = [*uow.collect_new_events(), *emitted]
        return raised_by(envelope, events) if events else _NO_EVENTS
    raised = raised_by(envelope, [*uow.collect_new_events(), *emitted])
    outbox.stage(uow, raised, raised_by(envelope, sent) if sent else ())
    uow.commit()
    return raised


def _send_alone(outbox: Outbox, uow_factory: Any, raised: Sequence[Envelope]) -> None:
    """Send what a handler without a unit of work raised, in a unit of work of its own.

    The handler's work is done: this is at least once only if the process
    does not stop between the two (a handler that must send with its change
    runs in a unit of work).
    """
    if not any(outbox.route(envelope[MESSAGE].__class__) for envelope in raised):
        return
    assert uow_factory is not None  # a bus with routes has one
    uow = uow_factory()
    try:
        outbox.stage(uow, raised, ())
        uow.commit()
    except BaseException as exc:
        rollback_quietly(uow, exc)
        raise
    finally:
        close_quietly(uow)


def _claim(uow: Any, envelope: Envelope, handler: str) -> bool:
    """Claim a delivered message for one handler in the unit of work's inbox."""
    claim = getattr(uow, "claim_incoming", None)
    if not callable(claim):
        raise ConfigurationError(
            f"{type(uow).__qualname__} has no inbox (claim_incoming): a message delivered "
            "by a consumer could be handled twice; use a unit of work with one"
        )
    return bool(claim(str(metadata_of(envelope).message_id), handler))


def rollback_quietly(uow: Any, error: BaseException) -> None:
    """Roll back; a failing rollback must not hide the error that caused it."""
    try:
        uow.rollback()
    except Exception:
        default_logger().exception("unit_of_work_rollback_failed", original_error=repr(error))


def close_quietly(uow: Any) -> None:
    """Close; the attempt's outcome is already decided (and maybe committed)."""
    try:
        uow.close()
    except Exception:
        default_logger().exception("unit_of_work_close_failed")
