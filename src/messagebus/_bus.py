"""The synchronous message bus."""

from __future__ import annotations

import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

import structlog

from ._context import MESSAGE, Context, Envelope, metadata_of, new_envelope, next_sequence, now
from ._core import AttemptLog, HandlerPlan, build_plans, check_required, info_gate, serializer_for
from ._registry import Registry
from .exceptions import NoHandlerError, NotAMessageError
from .messages import Command, Event, Message, Metadata
from .retry import RetryPolicy, _RetryController, uses_clock
from .serialization import Serializer

__all__ = ["MessageBus"]

R = TypeVar("R")

_NO_EVENTS: tuple[()] = ()
_perf_counter = time.perf_counter


def _monotonic() -> float:
    return time.monotonic()  # looked up at each call, so that tests can move the clock


class MessageBus:
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
    ) -> None:
        if uow is not None and not callable(uow):
            raise TypeError(f"uow must be a factory of units of work, not {uow!r}")
        self._commands, self._events = build_plans(
            registry, dependencies or {}, uow, retry if retry is not None else RetryPolicy()
        )
        check_required(require_handlers, self._commands)
        self._serializer = serializer_for(registry)
        self._sleep = sleep
        if logger is None:
            logger = structlog.get_logger("messagebus")
        logger = logger.bind() if hasattr(logger, "bind") else logger
        self._log = AttemptLog(logger, self._serializer)
        gate = info_gate(logger)
        for plan in self._plans():
            plan.run = self._make_run(plan, gate)

    def _plans(self) -> Iterable[HandlerPlan]:
        yield from self._commands.values()
        for plans in self._events.values():
            yield from plans

    @property
    def serializer(self) -> Serializer:
        """A serializer that knows every message type this bus handles."""
        return self._serializer

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
            return self._retry_after(plan, plan.attempt, envelope, error, None, None)[0]
        envelope = [message, None, metadata, next_sequence(), now()]
        result, events = plan.run(envelope)
        if events:
            self._dispatch(events, envelope)
        return result

    def _handle_other(self, message: Message, metadata: Metadata | None) -> None:
        if isinstance(message, Event):
            queue: deque[Envelope] = deque()
            self._dispatch_one(new_envelope(message, None, metadata), queue)
            while queue:
                self._dispatch_one(queue.popleft(), queue)
            return
        if isinstance(message, Command):
            raise NoHandlerError(message)
        raise NotAMessageError(message)

    def _dispatch(self, events: Iterable[Event], parent: Envelope) -> None:
        queue = deque([event, parent, None, next_sequence(), now()] for event in events)
        while queue:
            self._dispatch_one(queue.popleft(), queue)

    def _dispatch_one(self, envelope: Envelope, queue: deque[Envelope]) -> None:
        for plan in self._events.get(envelope[MESSAGE].__class__, _NO_EVENTS):
            try:
                _, events = plan.run(envelope)
            except Exception:  # logged as given up by run(); isolated here
                continue
            if events:
                queue.extend([event, envelope, None, next_sequence(), now()] for event in events)

    # -- building the per-handler run functions ---------------------------------

    def _make_run(
        self, plan: HandlerPlan, gate: bool | Callable[[], bool]
    ) -> Callable[[Envelope], tuple[Any, Any]]:
        attempt = plan.attempt = _make_attempt(plan)
        retry_after = self._retry_after
        log = self._log
        # A time-based stop (stop_after_delay) must count the first attempt too,
        # which costs a clock read on every dispatch; attempt counts need none.
        timed = uses_clock(plan.policy.stop)
        plan.bare = (
            gate is False and plan.uow_factory is None and not plan.plan.per_attempt and not timed
        )

        def run_quiet(envelope: Envelope) -> tuple[Any, Any]:
            try:
                return attempt(envelope)
            except Exception as exc:
                error = exc
            return retry_after(plan, attempt, envelope, error, None, None)

        def run_quiet_timed(envelope: Envelope) -> tuple[Any, Any]:
            first_started = _monotonic()
            try:
                return attempt(envelope)
            except Exception as exc:
                error = exc
            return retry_after(plan, attempt, envelope, error, None, first_started)

        def run_logged(envelope: Envelope) -> tuple[Any, Any]:
            first_started = _monotonic() if timed else None
            started = _perf_counter()
            try:
                outcome = attempt(envelope)
            except Exception as exc:
                error = exc
            else:
                log.succeeded(plan, envelope, 1, started)
                return outcome
            return retry_after(plan, attempt, envelope, error, started, first_started)

        if gate is True:
            return run_logged
        quiet = run_quiet_timed if timed else run_quiet
        if gate is False:
            return quiet
        enabled = gate

        def run_gated(envelope: Envelope) -> tuple[Any, Any]:
            return run_logged(envelope) if enabled() else quiet(envelope)

        return run_gated

    def _retry_after(
        self,
        plan: HandlerPlan,
        attempt: Callable[[Envelope], tuple[Any, Any]],
        envelope: Envelope,
        error: Exception,
        started: float | None,
        first_started: float | None,
    ) -> tuple[Any, Any]:
        """Go on after a failed first attempt: retry while the policy says so.

        ``started`` is when the first attempt started (``perf_counter``), for
        its log line; None when successes are not logged. ``first_started`` is
        the same on tenacity's clock (``monotonic``), for time-based stops;
        None when the policy's stop does not read the clock.
        """
        log = self._log
        controller = _RetryController(
            plan.policy, _monotonic() if first_started is None else first_started, error
        )
        while True:
            wait = controller.next_wait()
            if wait is None:
                log.failed(plan, envelope, controller.attempt, started, error)
                raise error
            log.retrying(plan, envelope, controller.attempt, started, error, wait)
            self._sleep(wait)
            controller.started()
            started = _perf_counter()
            try:
                outcome = attempt(envelope)
            except Exception as exc:
                error = exc
                controller.failed(exc)
                continue
            log.succeeded(plan, envelope, controller.attempt, started)
            return outcome


def _make_attempt(plan: HandlerPlan) -> Callable[[Envelope], tuple[Any, Any]]:
    """One attempt of a handler: call it in a fresh unit of work and collect its events."""
    call = plan.call
    uow_factory = plan.uow_factory
    uow_parameter = plan.plan.uow_parameter
    context_parameter = plan.plan.context_parameter
    metadata_parameter = plan.plan.metadata_parameter

    if uow_factory is None and not plan.plan.per_attempt:

        def bare_attempt(envelope: Envelope) -> tuple[Any, Any]:
            return call(envelope[MESSAGE]), _NO_EVENTS

        return bare_attempt

    def attempt(envelope: Envelope) -> tuple[Any, Any]:
        uow = uow_factory() if uow_factory is not None else None
        try:
            kwargs: dict[str, Any] = {}
            context = None
            if uow_parameter is not None:
                kwargs[uow_parameter] = uow
            if context_parameter is not None:
                context = kwargs[context_parameter] = Context(envelope, uow)
            if metadata_parameter is not None:
                kwargs[metadata_parameter] = metadata_of(envelope)
            result = call(envelope[MESSAGE], **kwargs)
            events: list[Event] = []
            if uow is not None:
                uow.commit()
                events.extend(uow.collect_new_events())
            if context is not None:
                events.extend(context._events)
        except BaseException as exc:
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
