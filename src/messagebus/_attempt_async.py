"""Handler attempts and runs, for the async bus.

This module is the source of ``_attempt_sync.py``, which
``scripts/generate_sync.py`` writes from it by removing ``async`` and
``await``; a test fails when the two drift apart. Edit this one.

- An *attempt* (:func:`make_attempt`) opens a unit of work, calls the handler,
  commits, and collects the events: ``(result, events)``. Its form is chosen
  once from the plan's :class:`~messagebus._core.Shape`.
- A *run* (:func:`make_run`) makes every attempt of one handler for one
  envelope: the first, through the middleware chain if there is one, and the
  retries, which the bus's ``_retry`` takes over on the first failure. With
  nothing to wrap, a handler that needs nothing or a Context only gets a run
  with its attempt written in (one call fewer per handler on the hot path).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._context import DELIVERED, MESSAGE, PARENT, Envelope, metadata_of, new_context, raised_by
from ._core import HandlerPlan, Shape
from ._log import default_logger
from ._outbox import Outbox
from .exceptions import ConfigurationError, DispatchError
from .messages import Command, Event
from .middleware import AsyncMiddleware, AsyncNext, HandlerCall, new_call

#: What a run and an attempt return: the handler's result, and the events raised.
Outcome = tuple[Any, Any]
Run = Callable[[Envelope], Awaitable[Outcome]]
#: The bus's ``_retry(plan, step, call, error, first_started)``.
Retry = Callable[
    [HandlerPlan, AsyncNext, HandlerCall, Exception, "float | None"], Awaitable[Outcome]
]
_NO_EVENTS: tuple[()] = ()


def make_run(
    bus: Any, plan: HandlerPlan, links: Sequence[AsyncMiddleware]
) -> tuple[Run, AsyncNext]:
    """The run of a handler, and the step its retries take (the chain around an attempt).

    ``bus`` provides ``_retry(plan, step, call, error, first_started)`` and ``_perf_counter``.
    """
    outbox: Outbox | None = bus._outbox
    attempt = make_attempt(plan, outbox, bus._uow_factory)
    step = compose(links, _last_step(attempt))
    retry: Retry = bus._retry
    name, kind = plan.name, plan.kind

    async def first_failed(envelope: Envelope, error: Exception) -> Outcome:
        return await retry(plan, step, new_call(envelope, name, kind), error, None)

    if links or plan.timed:
        clock = bus._perf_counter
        timed = plan.timed

        async def run_wrapped(envelope: Envelope) -> Outcome:
            call = new_call(envelope, name, kind)
            first_started = clock() if timed else None
            try:
                result = await step(call)
            except Exception as exc:
                return await retry(plan, step, call, exc, first_started)
            return result, call._events

        return run_wrapped, step

    handler = plan.call
    if plan.shape is Shape.NOTHING:

        async def run_bare(envelope: Envelope) -> Outcome:
            try:
                return await handler(envelope[MESSAGE]), _NO_EVENTS
            except Exception as exc:
                return await first_failed(envelope, exc)

        return run_bare, step

    if plan.shape is Shape.CONTEXT and outbox is None:

        async def run_with_context(envelope: Envelope) -> Outcome:
            context = new_context(envelope, None)
            try:
                result = await handler(envelope[MESSAGE], context)
            except Exception as exc:
                return await first_failed(envelope, exc)
            events = context._events
            return result, raised_by(envelope, events) if events else _NO_EVENTS

        return run_with_context, step

    async def run(envelope: Envelope) -> Outcome:
        try:
            return await attempt(envelope)
        except Exception as exc:
            return await first_failed(envelope, exc)

    return run, step


def compose(links: Sequence[AsyncMiddleware], last_step: AsyncNext) -> AsyncNext:
    """One step that runs ``links`` in order, the first outermost, around ``last_step``."""
    step = last_step
    for link in reversed(links):
        step = _link(link, step)
    return step


def _link(middleware: AsyncMiddleware, call_next: AsyncNext) -> AsyncNext:
    async def step(call: HandlerCall) -> Any:
        return await middleware(call, call_next)

    return step


def _last_step(attempt: Run) -> AsyncNext:
    """The end of a chain: the attempt itself, its events kept on the call."""

    async def step(call: HandlerCall) -> Any:
        result, call._events = await attempt(call._envelope)
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

        async def bare_attempt(envelope: Envelope) -> Outcome:
            return await call(envelope[MESSAGE]), _NO_EVENTS

        return bare_attempt

    uow_factory = plan.uow_factory

    if shape is Shape.CONTEXT:

        async def context_attempt(envelope: Envelope) -> Outcome:
            context = new_context(envelope, None)
            result = await call(envelope[MESSAGE], context)
            raised = raised_by(envelope, context._events) if context._events else _NO_EVENTS
            if outbox is not None and raised:
                await _send_alone(outbox, send_uow, raised)
            return result, raised

        return context_attempt

    if shape is Shape.UOW:
        assert uow_factory is not None

        async def uow_attempt(envelope: Envelope) -> Outcome:
            uow = uow_factory()
            try:
                if envelope[PARENT] is DELIVERED and not await _claim(uow, envelope, plan.name):
                    await uow.rollback()
                    return None, _NO_EVENTS  # handled before: its events went then
                result = await call(envelope[MESSAGE], uow)
                raised = await _commit(uow, envelope, (), None, outbox)
            except BaseException as exc:  # cancellation included: roll back, then re-raise
                await rollback_quietly(uow, exc)
                raise
            finally:
                await close_quietly(uow)
            return result, raised

        return uow_attempt

    uow_parameter = plan.call_plan.uow_parameter
    context_parameter = plan.call_plan.context_parameter
    metadata_parameter = plan.call_plan.metadata_parameter

    async def keywords_attempt(envelope: Envelope) -> Outcome:
        uow = uow_factory() if uow_factory is not None else None
        try:
            delivered = uow is not None and envelope[PARENT] is DELIVERED
            if delivered and not await _claim(uow, envelope, plan.name):
                await uow.rollback()  # type: ignore[union-attr]
                return None, _NO_EVENTS  # handled before: its events went then
            kwargs: dict[str, Any] = {}
            context = None
            if uow_parameter is not None:
                kwargs[uow_parameter] = uow
            if context_parameter is not None:
                context = kwargs[context_parameter] = new_context(envelope, uow)
            if metadata_parameter is not None:
                kwargs[metadata_parameter] = metadata_of(envelope)
            result = await call(envelope[MESSAGE], **kwargs)
            emitted = context._events if context is not None else ()
            if uow is not None:
                sent = context._sent if context is not None else None
                raised = await _commit(uow, envelope, emitted, sent, outbox)
            else:
                raised = raised_by(envelope, emitted) if emitted else _NO_EVENTS
                if outbox is not None and raised:
                    await _send_alone(outbox, send_uow, raised)
        except BaseException as exc:  # cancellation included: roll back, then re-raise
            if uow is not None:
                await rollback_quietly(uow, exc)
            raise
        finally:
            if uow is not None:
                await close_quietly(uow)
        return result, raised

    return keywords_attempt


async def _commit(
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
        await uow.commit()
        events = [*uow.collect_new_events(), *emitted]
        return raised_by(envelope, events) if events else _NO_EVENTS
    raised = raised_by(envelope, [*uow.collect_new_events(), *emitted])
    outbox.stage(uow, raised, raised_by(envelope, sent) if sent else ())
    await uow.commit()
    return raised


async def _send_alone(outbox: Outbox, uow_factory: Any, raised: Sequence[Envelope]) -> None:
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
        await uow.commit()
    except BaseException as exc:
        await rollback_quietly(uow, exc)
        raise
    finally:
        await close_quietly(uow)


async def _claim(uow: Any, envelope: Envelope, handler: str) -> bool:
    """Claim a delivered message for one handler in the unit of work's inbox."""
    claim = getattr(uow, "claim_incoming", None)
    if not callable(claim):
        raise ConfigurationError(
            f"{type(uow).__qualname__} has no inbox (claim_incoming): a message delivered "
            "by a consumer could be handled twice; use a unit of work with one"
        )
    return bool(await claim(str(metadata_of(envelope).message_id), handler))


async def rollback_quietly(uow: Any, error: BaseException) -> None:
    """Roll back; a failing rollback must not hide the error that caused it."""
    try:
        await uow.rollback()
    except Exception:
        default_logger().exception("unit_of_work_rollback_failed", original_error=repr(error))


async def close_quietly(uow: Any) -> None:
    """Close; the attempt's outcome is already decided (and maybe committed)."""
    try:
        await uow.close()
    except Exception:
        default_logger().exception("unit_of_work_close_failed")
