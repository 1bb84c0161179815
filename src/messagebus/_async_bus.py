"""The asyncio message bus.

It drives the same handler plans as the sync bus (resolution, policies,
retry decisions, envelopes and log lines all come from the shared core); only
the awaiting differs. Handlers must be ``async def``: a plain function is
refused when the bus is built, since running it on the event loop would block
every other task, and running it in a thread would take it out of the unit of
work's transaction.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

from ._attempts_async import make_attempt, monotonic, retry_after
from ._context import MESSAGE, Context, Envelope, new_envelope, next_sequence, now
from ._core import BusCore, HandlerPlan, _redelivering
from ._registry import Registry
from .exceptions import ConfigurationError, NoHandlerError, NotAMessageError
from .messages import Command, Event, Message, Metadata
from .observe import DeadLetterStore, Listener
from .retry import RetryPolicy

__all__ = ["AsyncMessageBus"]

R = TypeVar("R")

_NO_EVENTS: tuple[()] = ()
_allocate = object.__new__
_perf_counter = time.perf_counter


def _is_async(handler: Callable[..., Any]) -> bool:
    target: Any = handler
    while isinstance(target, functools.partial):
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - a callable object's own method
    )


class AsyncMessageBus(BusCore):
    """Dispatches commands and events to the ``async def`` handlers of a :class:`Registry`.

    It keeps every promise of :class:`MessageBus`: one handler per command and
    its result returned, events isolated and breadth first, a fresh unit of
    work per attempt, retries with the same :class:`RetryPolicy`. Share one
    bus between all tasks: dispatch state is local to each :meth:`handle` call.

    A cancelled :meth:`handle` rolls back the attempt's unit of work,
    dispatches nothing from it, and lets the cancellation reach the caller.

    Args:
        registry: The handlers; every one must be an ``async def`` function.
        dependencies: As for :class:`MessageBus`.
        uow: A factory of async units of work (:class:`AsyncUnitOfWork`).
        retry: The default retry policy; strategies may be coroutines.
        sleep: How retries wait (awaited); by default ``asyncio.sleep``.
        logger: A structlog logger; by default ``structlog.get_logger("messagebus")``.
        require_handlers: As for :class:`MessageBus`.
        listeners: As for :class:`MessageBus`.
        dead_letters: As for :class:`MessageBus`; its ``add`` may be a coroutine.
        dead_letter_commands: As for :class:`MessageBus`.

    Raises:
        ConfigurationError: A handler is not an ``async def`` function.
        UnresolvedDependencyError: A handler asks for something nothing provides.
        MissingHandlersError: A required command has no handler.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        dependencies: Mapping[str, object] | None = None,
        uow: Callable[[], Any] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        logger: Any = None,
        require_handlers: Iterable[type[Command[Any]] | types.ModuleType] = (),
        listeners: Iterable[Listener] = (),
        dead_letters: DeadLetterStore | None = None,
        dead_letter_commands: bool = False,
    ) -> None:
        super().__init__(
            registry,
            dependencies=dependencies,
            uow=uow,
            retry=retry,
            logger=logger,
            require_handlers=require_handlers,
            listeners=listeners,
            dead_letters=dead_letters,
            dead_letter_commands=dead_letter_commands,
        )
        self._sleep = sleep
        for plan in self._plans():
            if not _is_async(plan.registration.handler):
                raise ConfigurationError(
                    f"AsyncMessageBus runs async handlers, and {plan.name} is a plain "
                    "function: make it `async def` (do blocking work inside it with "
                    "`await asyncio.to_thread(...)`), or use MessageBus"
                )
            plan.run = self._make_run(plan)

    @overload
    async def handle(self, message: Command[R], *, metadata: Metadata | None = None) -> R: ...

    @overload
    async def handle(self, message: Event, *, metadata: Metadata | None = None) -> None: ...

    async def handle(self, message: Message, *, metadata: Metadata | None = None) -> Any:
        """Handle a message and every event that follows from it, breadth first.

        As :meth:`MessageBus.handle`, awaited.
        """
        plan = self._commands.get(message.__class__)
        if metadata is None:
            # Handlers that need nothing per attempt and raise no events are
            # awaited directly; an envelope is made only when one fails.
            if plan is not None and plan.bare:
                try:
                    return await plan.call(message)
                except Exception as exc:
                    error = exc
                failed: Envelope = [message, None, None, next_sequence(), now()]
                outcome = await retry_after(plan, failed, error, self)
                return outcome[0]
            bare = self._bare_events.get(message.__class__) if plan is None else None
            if bare:
                failed_event: Envelope | None = None  # one envelope (one id) for all
                for event_plan in bare:
                    try:
                        await event_plan.call(message)
                    except Exception as exc:
                        failed_event = failed_event or new_envelope(message, None, None)
                        await self._bare_failed(event_plan, exc, failed_event)
                return None
        if plan is None:
            if isinstance(message, Event):
                queue: deque[Envelope] = deque((new_envelope(message, None, metadata),))
                await self._drain(queue)
                return None
            if isinstance(message, Command):
                raise NoHandlerError(message)
            raise NotAMessageError(message)
        if plan.contextual:
            # As in MessageBus.handle: a handler that needs only its Context,
            # awaited here; the message's id and time are fixed when first needed.
            envelope: Envelope = [message, None, metadata, None, None]
            # new_context(envelope, None), written out: the call would cost as
            # much as making the context itself.
            context = _allocate(Context)
            context._envelope = envelope
            context._events = []
            context.uow = None
            try:
                result = await plan.call(message, context)
            except Exception as exc:
                result, events = await retry_after(plan, envelope, exc, self)
            else:
                events = context._events
        elif plan.quiet:
            envelope = [message, None, metadata, next_sequence(), now()]
            # As plan.run(envelope) would, one await shorter.
            try:
                result, events = await plan.attempt(envelope)
            except Exception as exc:
                result, events = await retry_after(plan, envelope, exc, self)
        else:
            envelope = [message, None, metadata, next_sequence(), now()]
            if self._listeners:
                self._notify(envelope)
            result, events = await plan.run(envelope)
        if not events:
            return result
        # As in MessageBus.handle: the events whose handlers are all bare at once.
        bare_events = self._bare_events
        for event in events:
            bare = bare_events.get(event.__class__)
            if not bare:
                await self._enqueue(events, event, envelope)
                break
            failed_event = None  # one envelope (one id) for all its handlers
            for event_plan in bare:
                try:
                    await event_plan.call(event)
                except Exception as exc:
                    failed_event = failed_event or new_envelope(event, envelope, None)
                    await self._bare_failed(event_plan, exc, failed_event)
        return result

    async def redeliver(
        self, message: Message, *, handler: str, metadata: Metadata | None = None
    ) -> Any:
        """As :meth:`MessageBus.redeliver`, awaited."""
        plan = self._redelivery_plan(message, handler)
        envelope = new_envelope(message, None, metadata)
        token = _redelivering.set(True)
        try:
            if self._listeners:
                self._notify(envelope)
            result, events = await plan.run(envelope)
        finally:
            _redelivering.reset(token)
        if events:
            await self._enqueue(events, events[0], envelope)
        return result

    async def _enqueue(self, events: Sequence[Event], first: Event, parent: Envelope) -> None:
        """Handle ``events`` from ``first`` on in a queue, breadth first."""
        # Its first occurrence is the one meant: an earlier one, of the same type,
        # would have been queued first.
        start = next(index for index, event in enumerate(events) if event is first)
        queue = deque([new_envelope(event, parent, None) for event in events[start:]])
        await self._drain(queue)

    async def _bare_failed(self, plan: HandlerPlan, error: Exception, envelope: Envelope) -> None:
        """An event handler awaited directly failed: retry it, isolated from the rest."""
        try:
            await retry_after(plan, envelope, error, self)
        except Exception:  # logged (and stored) as given up; isolated here
            return

    async def _give_up(
        self, plan: HandlerPlan, envelope: Envelope, attempts: int, error: BaseException
    ) -> None:
        letter = self._dead_letter(plan, envelope, attempts, error)
        if letter is not None:
            assert self._dead_letters is not None
            try:
                stored = self._dead_letters.add(letter)
                if inspect.isawaitable(stored):
                    await stored
            except Exception:
                self._log.store_failed(letter)

    async def _drain(self, queue: deque[Envelope]) -> None:
        while queue:
            envelope = queue.popleft()
            if self._listeners:
                self._notify(envelope)
            message = envelope[MESSAGE]
            for plan in self._events.get(message.__class__, _NO_EVENTS):
                if plan.bare:
                    try:
                        await plan.call(message)
                    except Exception as exc:
                        await self._bare_failed(plan, exc, envelope)
                    continue
                try:
                    _, events = await plan.run(envelope)
                except Exception:  # logged as given up by run(); isolated here
                    continue
                if events:
                    queue.extend(
                        [event, envelope, None, next_sequence(), now()] for event in events
                    )

    def _make_run(self, plan: HandlerPlan) -> Callable[[Envelope], Awaitable[tuple[Any, Any]]]:
        attempt = plan.attempt = make_attempt(plan)
        gate = self._gate
        gated = callable(gate)
        log = self._log
        timed = plan.timed

        if plan.quiet:

            async def run_quiet(envelope: Envelope) -> tuple[Any, Any]:
                try:
                    return await attempt(envelope)
                except Exception as exc:
                    error = exc
                return await retry_after(plan, envelope, error, self)

            return run_quiet

        async def run(envelope: Envelope) -> tuple[Any, Any]:
            logged = gate() if gated else gate  # type: ignore[operator]
            first_started = monotonic() if timed else None
            started = _perf_counter() if logged else None
            try:
                outcome = await attempt(envelope)
            except Exception as exc:
                error = exc
            else:
                if started is not None:
                    log.succeeded(plan, envelope, 1, started)
                return outcome
            return await retry_after(plan, envelope, error, self, started, first_started)

        return run
