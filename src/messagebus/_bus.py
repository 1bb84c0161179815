"""The synchronous message bus."""

from __future__ import annotations

import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

from ._attempts_sync import make_attempt, monotonic, retry_after
from ._context import MESSAGE, Context, Envelope, new_envelope, next_sequence, now
from ._core import BusCore, HandlerPlan, _redelivering
from ._registry import Registry
from .exceptions import NoHandlerError, NotAMessageError
from .messages import Command, Event, Message, Metadata
from .observe import DeadLetterStore, Listener
from .retry import RetryPolicy

__all__ = ["MessageBus"]

R = TypeVar("R")

_NO_EVENTS: tuple[()] = ()
_allocate = object.__new__
_perf_counter = time.perf_counter


class MessageBus(BusCore):
    """Dispatches commands and events to the handlers of a :class:`Registry`.

    Build it once, at start-up, and share it: all dispatch state is local to
    each :meth:`handle` call, so one bus serves many threads at once.

    Args:
        registry: The handlers.
        dependencies: Values that handlers ask for by parameter name (or by
            type, where exactly one value is of the annotated class).
        uow: A factory that makes a new unit of work; called once for every
            handler attempt (unless the handler opted out). None runs every
            handler without one.
        retry: The default retry policy (by default: transient failures only,
            at most 3 attempts).
        sleep: How retries wait; tests pass a function that does not sleep.
        logger: A structlog logger; by default ``structlog.get_logger("messagebus")``.
            Configure structlog before building the bus.
        require_handlers: Command types, or modules of command types, that
            must have a handler; checked now.
        listeners: Told of every message dispatched and every attempt
            (:class:`~messagebus.observe.Listener`).
        dead_letters: Where event handlings given up on are stored
            (:class:`~messagebus.observe.DeadLetterStore`).
        dead_letter_commands: Store failed commands there too (they also
            reach the caller).

    Raises:
        UnresolvedDependencyError: A handler asks for something nothing provides.
        MissingHandlersError: A required command has no handler.
        MessageNameConflictError: Two handled message types share a name.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        dependencies: Mapping[str, object] | None = None,
        uow: Callable[[], Any] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], object] = time.sleep,
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
            plan.run = self._make_run(plan)

    @overload
    def handle(self, message: Command[R], *, metadata: Metadata | None = None) -> R: ...

    @overload
    def handle(self, message: Event, *, metadata: Metadata | None = None) -> None: ...

    def handle(self, message: Message, *, metadata: Metadata | None = None) -> Any:
        """Handle a message and every event that follows from it, breadth first.

        Args:
            message: A command or an event.
            metadata: The message's metadata, when it has one already (a
                replayed message, or a correlation id from a web request);
                by default a new id and the current time.

        Returns:
            For a command, what its handler returned; for an event, None.

        Raises:
            NotAMessageError: ``message`` is not a Command or an Event.
            NoHandlerError: No handler is registered for the command.
            Exception: The command handler's own exception, after its retries.
        """
        plan = self._commands.get(message.__class__)
        if plan is None:
            return self._handle_other(message, metadata)
        if plan.bare and metadata is None:
            # The common case, kept short: no unit of work, nothing per attempt,
            # attempts not logged, hence no events and no envelope unless it fails.
            try:
                return plan.call(message)
            except Exception as exc:
                error = exc
            envelope: Envelope = [message, None, None, next_sequence(), now()]
            return retry_after(plan, envelope, error, self)[0]
        if plan.contextual:
            # A handler that needs only its Context, called as its attempt would
            # call it. The message's id and time are fixed when first needed (its
            # metadata asked for, a raised event given an envelope, a failure).
            envelope = [message, None, metadata, None, None]
            # new_context(envelope, None), written out: the call would cost as
            # much as making the context itself.
            context = _allocate(Context)
            context._envelope = envelope
            context._events = []
            context.uow = None
            try:
                result = plan.call(message, context)
            except Exception as exc:
                result, events = retry_after(plan, envelope, exc, self)
            else:
                events = context._events
        elif plan.quiet:
            envelope = [message, None, metadata, next_sequence(), now()]
            # As plan.run(envelope) would, one call shorter.
            try:
                result, events = plan.attempt(envelope)
            except Exception as exc:
                result, events = retry_after(plan, envelope, exc, self)
        else:
            envelope = [message, None, metadata, next_sequence(), now()]
            if self._listeners:
                self._notify(envelope)
            result, events = plan.run(envelope)
        if not events:
            return result
        # The events whose handlers are all bare are handled at once, in order,
        # without an envelope unless one fails: they raise no events, and every
        # event before them has been handled. From the first event that is not
        # such, the rest are queued (breadth first).
        bare_events = self._bare_events
        for event in events:
            bare = bare_events.get(event.__class__)
            if not bare:
                self._enqueue(events, event, envelope)
                break
            failed: Envelope | None = None  # one envelope (one id) for all its handlers
            for event_plan in bare:
                try:
                    event_plan.call(event)
                except Exception as exc:
                    failed = failed or new_envelope(event, envelope, None)
                    self._bare_failed(event_plan, exc, failed)
        return result

    def _handle_other(self, message: Message, metadata: Metadata | None) -> None:
        bare = self._bare_events.get(message.__class__) if metadata is None else None
        if bare:
            # As for commands: handlers that need nothing per attempt and raise
            # no events are called directly; an envelope is made only on failure.
            failed: Envelope | None = None  # one envelope (one id) for all its handlers
            for plan in bare:
                try:
                    plan.call(message)
                except Exception as exc:
                    failed = failed or new_envelope(message, None, None)
                    self._bare_failed(plan, exc, failed)
            return
        if isinstance(message, Event):
            self._drain(deque((new_envelope(message, None, metadata),)))
            return
        if isinstance(message, Command):
            raise NoHandlerError(message)
        raise NotAMessageError(message)

    def _enqueue(self, events: Sequence[Event], first: Event, parent: Envelope) -> None:
        """Handle ``events`` from ``first`` on in a queue, breadth first."""
        # Its first occurrence is the one meant: an earlier one, of the same type,
        # would have been queued first.
        start = next(index for index, event in enumerate(events) if event is first)
        queue = deque([new_envelope(event, parent, None) for event in events[start:]])
        self._drain(queue)

    def _drain(self, queue: deque[Envelope]) -> None:
        while queue:
            self._dispatch_one(queue.popleft(), queue)

    def _dispatch_one(self, envelope: Envelope, queue: deque[Envelope]) -> None:
        if self._listeners:
            self._notify(envelope)
        message = envelope[MESSAGE]
        for plan in self._events.get(message.__class__, _NO_EVENTS):
            if plan.bare:
                try:
                    plan.call(message)
                except Exception as exc:
                    self._bare_failed(plan, exc, envelope)
                continue
            try:
                _, events = plan.run(envelope)
            except Exception:  # logged as given up by run(); isolated here
                continue
            if events:
                queue.extend([event, envelope, None, next_sequence(), now()] for event in events)

    def redeliver(self, message: Message, *, handler: str, metadata: Metadata | None = None) -> Any:
        """Handle a message again with one of its handlers only, e.g. a dead letter's.

        The handler runs with its retries and unit of work, and the events that
        follow are dispatched as usual. Its failure is raised (not stored again
        as a dead letter): the caller keeps the letter it is retrying.

        Raises:
            DispatchError: No handler of that name handles the message.
        """
        plan = self._redelivery_plan(message, handler)
        envelope = new_envelope(message, None, metadata)
        token = _redelivering.set(True)
        try:
            if self._listeners:
                self._notify(envelope)
            result, events = plan.run(envelope)
        finally:
            _redelivering.reset(token)
        if events:
            self._enqueue(events, events[0], envelope)
        return result

    def _bare_failed(self, plan: HandlerPlan, error: Exception, envelope: Envelope) -> None:
        """An event handler called directly failed: retry it, isolated from the rest."""
        try:
            retry_after(plan, envelope, error, self)
        except Exception:  # logged (and stored) as given up; isolated here
            return

    def _give_up(
        self, plan: HandlerPlan, envelope: Envelope, attempts: int, error: BaseException
    ) -> None:
        letter = self._dead_letter(plan, envelope, attempts, error)
        if letter is not None:
            assert self._dead_letters is not None
            try:
                self._dead_letters.add(letter)
            except Exception:
                self._log.store_failed(letter)

    # -- building the per-handler run functions ---------------------------------

    def _make_run(self, plan: HandlerPlan) -> Callable[[Envelope], tuple[Any, Any]]:
        attempt = plan.attempt = make_attempt(plan)
        gate = self._gate
        log = self._log
        timed = plan.timed

        def run_quiet(envelope: Envelope) -> tuple[Any, Any]:
            try:
                return attempt(envelope)
            except Exception as exc:
                error = exc
            return retry_after(plan, envelope, error, self)

        def run_quiet_timed(envelope: Envelope) -> tuple[Any, Any]:
            first_started = monotonic()
            try:
                return attempt(envelope)
            except Exception as exc:
                error = exc
            return retry_after(plan, envelope, error, self, None, first_started)

        def run_logged(envelope: Envelope) -> tuple[Any, Any]:
            first_started = monotonic() if timed else None
            started = _perf_counter()
            try:
                outcome = attempt(envelope)
            except Exception as exc:
                error = exc
            else:
                log.succeeded(plan, envelope, 1, started)
                return outcome
            return retry_after(plan, envelope, error, self, started, first_started)

        if gate is True:
            return run_logged
        quiet = run_quiet_timed if timed else run_quiet
        if gate is False:
            return quiet
        enabled = gate

        def run_gated(envelope: Envelope) -> tuple[Any, Any]:
            return run_logged(envelope) if enabled() else quiet(envelope)

        return run_gated
