"""The parts of dispatch that do no I/O, shared by every bus.

A bus is built from a :class:`~messagebus.Registry` into one
:class:`HandlerPlan` per registration: everything that can be decided before
the first message (injection, unit of work, retry policy, log fields) is
decided here, once. The sync bus (and an async one) only drive these plans.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import functools
import logging
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from ._context import MESSAGE, Envelope, log_ids, metadata_of
from ._dependencies import CallPlan, check_dependencies, plan_call
from ._registry import Registration, Registry
from .exceptions import ConfigurationError, DispatchError, MissingHandlersError, NotAMessageError
from .logging import _line_writer
from .messages import Command, Event, Message, message_name, message_version
from .observe import Attempt, DeadLetter, DeadLetterStore, Listener, Outcome
from .retry import RetryPolicy, uses_clock
from .serialization import Serializer

_perf_counter = time.perf_counter

#: The log events of a handler attempt, one per attempt.
EVENT_SUCCEEDED = "message_handled"
EVENT_RETRYING = "message_attempt_failed"
EVENT_FAILED = "message_failed"


class HandlerPlan:
    """Everything decided at start-up about one handler of one message type."""

    __slots__ = (
        "attempt",
        "bare",
        "call",
        "context_only",
        "contextual",
        "is_command",
        "logger",
        "message_name",
        "message_version",
        "name",
        "needs_nothing",
        "plan",
        "policy",
        "quiet",
        "registration",
        "run",
        "timed",
        "uow_factory",
        "write_line",
    )

    def __init__(
        self,
        registration: Registration,
        plan: CallPlan,
        policy: RetryPolicy,
        uow_factory: Callable[[], Any] | None,
    ) -> None:
        self.registration = registration
        self.plan = plan
        self.call = plan.call
        self.policy = policy
        self.uow_factory = uow_factory if registration.uow else None
        self.name = registration.name
        self.message_name = message_name(registration.message_type)
        self.message_version = message_version(registration.message_type)
        self.is_command = issubclass(registration.message_type, Command)
        #: A time-based stop (stop_after_delay) must count the first attempt
        #: too, which costs a clock read on every dispatch; attempt counts need none.
        self.timed = uses_clock(policy.stop)
        #: What the handler needs per attempt: nothing (no unit of work, context
        #: or metadata), or a Context only, as ``(message, context)``.
        self.needs_nothing = self.uow_factory is None and not plan.per_attempt
        self.context_only = self.uow_factory is None and plan.positional == (
            plan.context_parameter,
        )
        #: Set by the bus: runs every attempt of this handler for one envelope.
        self.run: Callable[[Envelope], Any] = _unset
        #: Set by the bus: one attempt, without retries or logs.
        self.attempt: Callable[[Envelope], Any] = _unset
        #: Set when the bus is built: True when attempts are neither logged,
        #: listened to nor timed, so that ``run`` is ``attempt`` and retries on failure.
        self.quiet = False
        #: Set when the bus is built: quiet and needing nothing per attempt: a
        #: dispatch needs no envelope.
        self.bare = False
        #: Set when the bus is built: quiet and needing a Context only: called
        #: by ``handle`` itself, its first attempt needs no attempt function.
        self.contextual = False
        #: Set by the bus: the logger of this handler's attempts, its fields bound.
        self.logger: Any = None
        #: Set by the bus: writes a success line as ``logger.info`` would, quicker;
        #: None unless the logger is one that configure_logging() set up for it.
        self.write_line: Callable[[str, dict[str, Any]], None] | None = None


def _unset(envelope: Envelope) -> Any:  # pragma: no cover - replaced when the bus is built
    raise RuntimeError("handler plan used before the bus was built")


def build_plans(
    registry: Registry,
    dependencies: Mapping[str, object],
    uow_factory: Callable[[], Any] | None,
    default_policy: RetryPolicy,
) -> tuple[dict[type[Message], HandlerPlan], dict[type[Message], tuple[HandlerPlan, ...]]]:
    """Resolve every registration; errors name the handler and the parameter."""
    check_dependencies(dependencies)

    def build(registration: Registration) -> HandlerPlan:
        call = plan_call(registration, dependencies, has_uow_factory=uow_factory is not None)
        policy = registration.retry if registration.retry is not None else default_policy
        return HandlerPlan(registration, call, policy, uow_factory)

    commands = {t: build(r) for t, r in registry.commands.items()}
    events = {t: tuple(build(r) for r in rs) for t, rs in registry.events.items()}
    return commands, events


def check_required(
    required: Iterable[type[Command[Any]] | types.ModuleType],
    commands: Mapping[type[Message], object],
) -> None:
    """Fail at start-up when a required command has no handler.

    ``required`` holds command types, or modules whose Command subclasses are
    all required.
    """
    wanted: list[type[Message]] = []
    for item in required:
        if isinstance(item, types.ModuleType):
            wanted.extend(
                value
                for value in vars(item).values()
                if isinstance(value, type)
                and issubclass(value, Command)
                and value.__module__ == item.__name__
            )
        elif isinstance(item, type) and issubclass(item, Command):
            wanted.append(item)
        else:
            raise ConfigurationError(
                f"require_handlers takes command types and modules, not {item!r}"
            )
    missing = [t for t in wanted if t not in commands]
    if missing:
        raise MissingHandlersError(missing)


class BusCore:
    """What every bus does when it is built: resolve, check, and prepare to log.

    Subclasses (the sync and the async bus) add the driving of the plans.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        dependencies: Mapping[str, object] | None,
        uow: Callable[[], Any] | None,
        retry: RetryPolicy | None,
        logger: Any,
        require_handlers: Iterable[type[Command[Any]] | types.ModuleType],
        listeners: Iterable[Listener] = (),
        dead_letters: DeadLetterStore | None = None,
        dead_letter_commands: bool = False,
    ) -> None:
        if uow is not None and not callable(uow):
            raise TypeError(f"uow must be a factory of units of work, not {uow!r}")
        self._commands, self._events = build_plans(
            registry, dependencies or {}, uow, retry if retry is not None else RetryPolicy()
        )
        check_required(require_handlers, self._commands)
        self._serializer = serializer_for(registry)
        if logger is None:
            logger = structlog.get_logger("messagebus")
        logger = logger.bind() if hasattr(logger, "bind") else logger
        self._listeners = tuple(listeners)
        self._log = AttemptLog(logger, self._serializer, self._listeners)
        # Attempts are timed and reported when they are logged or listened to.
        self._gate: bool | Callable[[], bool] = True if self._listeners else self._log.info
        for plan in self._plans():
            self._log.prepare(plan)
            plan.quiet = self._gate is False and not plan.timed
            plan.bare = plan.quiet and plan.needs_nothing
            plan.contextual = plan.quiet and plan.context_only
        # The event types whose every handler is bare, with those handlers.
        self._bare_events = {
            t: ps for t, ps in self._events.items() if ps and all(p.bare for p in ps)
        }
        self._dead_letters = dead_letters
        self._dead_letter_commands = dead_letter_commands

    def _notify(self, envelope: Envelope) -> None:
        metadata = metadata_of(envelope)
        for listener in self._listeners:
            listener.message_dispatched(envelope[MESSAGE], metadata)

    def _dead_letter(
        self, plan: HandlerPlan, envelope: Envelope, attempts: int, error: BaseException
    ) -> DeadLetter | None:
        """The dead letter to store for a handling given up on, or None."""
        if self._dead_letters is None or _redelivering.get():
            return None
        if plan.is_command and not self._dead_letter_commands:
            return None
        message = envelope[MESSAGE]
        return DeadLetter(
            message_name=plan.message_name,
            message_version=plan.message_version,
            payload=self._serializer.dump_payload(message),
            metadata=self._serializer.dump_metadata(metadata_of(envelope)),
            handler=plan.name,
            error=f"{type(error).__qualname__}: {error}",
            traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)),
            attempts=attempts,
            failed_at=datetime.datetime.now(datetime.timezone.utc),
        )

    def _redelivery_plan(self, message: Message, handler: str) -> HandlerPlan:
        if not isinstance(message, (Command, Event)):
            raise NotAMessageError(message, "redeliver()")
        command_plan = self._commands.get(message.__class__)
        candidates = (command_plan,) if command_plan else self._events.get(message.__class__, ())
        for plan in candidates:
            if plan.name == handler:
                return plan
        known = ", ".join(plan.name for plan in candidates) or "none"
        raise DispatchError(
            f"no handler named {handler!r} handles {type(message).__qualname__}; it has: {known}"
        )

    def _plans(self) -> Iterable[HandlerPlan]:
        yield from self._commands.values()
        for plans in self._events.values():
            yield from plans

    @property
    def serializer(self) -> Serializer:
        """A serializer that knows every message type this bus handles."""
        return self._serializer

    @property
    def dead_letters(self) -> DeadLetterStore | None:
        """The store of the handlings this bus gave up on, if it has one."""
        return self._dead_letters


def serializer_for(registry: Registry) -> Serializer:
    """A serializer that knows every message type the registry handles."""
    return Serializer([*registry.commands, *registry.events])


def info_gate(logger: Any) -> bool | Callable[[], bool]:
    """Whether attempts are logged: fixed (a bool) or asked each time (a callable).

    structlog's filtering loggers fix their level when they are configured, so
    the answer is fixed once; a standard-library logger's level can change, so
    it is asked per attempt.
    """
    stdlib_check = getattr(logger, "isEnabledFor", None)
    if callable(stdlib_check):
        wrapped = getattr(logger, "_logger", None)  # structlog's BoundLogger wraps one
        if isinstance(wrapped, logging.Logger):
            # Ask the standard library's logger itself: two calls fewer each time.
            stdlib_check = wrapped.isEnabledFor
        return functools.partial(stdlib_check, logging.INFO)
    structlog_check = getattr(logger, "is_enabled_for", None)
    if callable(structlog_check):
        return bool(structlog_check(logging.INFO))
    return True


#: Set while a dead letter is redelivered: its failure updates that letter
#: instead of adding another.
_redelivering: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "messagebus_redelivering", default=False
)


class AttemptLog:
    """Writes the one log event of each handler attempt, and tells the listeners."""

    __slots__ = ("_listeners", "_logger", "_serializer", "info")

    def __init__(
        self, logger: Any, serializer: Serializer, listeners: tuple[Listener, ...]
    ) -> None:
        self._logger = logger
        self._serializer = serializer
        self._listeners = listeners
        #: Whether successes are logged: fixed, or asked each time (see info_gate).
        self.info = info_gate(logger)

    def _tell(
        self,
        handler: HandlerPlan,
        envelope: Envelope,
        attempt: int,
        started: float | None,
        outcome: Outcome,
        error: BaseException | None = None,
    ) -> None:
        record = Attempt(
            message=envelope[MESSAGE],
            metadata=metadata_of(envelope),
            handler=handler.name,
            attempt=attempt,
            outcome=outcome,
            error=error,
            duration_s=None if started is None else _perf_counter() - started,
        )
        for listener in self._listeners:
            listener.attempt_finished(record)

    def store_failed(self, letter: DeadLetter) -> None:
        """The dead-letter store refused a letter: log all of it, so nothing is lost."""
        try:
            self._logger.exception(
                "dead_letter_store_failed",
                message_name=letter.message_name,
                handler=letter.handler,
                payload=letter.payload,
                metadata=letter.metadata,
                error=letter.error,
            )
        except Exception as exc:  # nor logged: the letter goes to stderr, whole
            _unwritable("dead_letter_store_failed", exc)
            with contextlib.suppress(Exception):
                sys.stderr.write(f"messagebus: the dead letter: {letter!r}\n")

    def prepare(self, handler: HandlerPlan) -> None:
        """Give the handler a logger with the fields of all its attempts bound."""
        fields = {
            "message_name": handler.message_name,
            "message_kind": "command" if handler.is_command else "event",
            "message_version": handler.message_version,
            "handler": handler.name,
        }
        logger = self._logger
        bind = getattr(logger, "bind", None)
        handler.logger = bind(**fields) if callable(bind) else _WithFields(logger, fields)
        handler.write_line = _line_writer(handler.logger)

    def _fields(
        self, envelope: Envelope, attempt: int, started: float | None, outcome: Outcome
    ) -> dict[str, Any]:
        """The fields of one attempt's log event, beyond those bound to the handler's logger."""
        message_id, correlation_id, causation_id, created_at = log_ids(envelope)
        try:
            payload: Any = self._serializer.dump_payload(envelope[MESSAGE], redact=True)
        except Exception:  # a log line must never break handling
            payload = repr(envelope[MESSAGE])
        return {
            "outcome": outcome,
            "message_id": message_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "created_at": created_at,
            "attempt": attempt,
            # To the microsecond: int() and a division cost a fraction of round().
            "duration_ms": (
                None if started is None else int((_perf_counter() - started) * 1e6) / 1000.0
            ),
            "payload": payload,
        }

    def succeeded(
        self, handler: HandlerPlan, envelope: Envelope, attempt: int, started: float
    ) -> None:
        info = self.info
        if info() if callable(info) else info:
            try:
                fields = self._fields(envelope, attempt, started, "succeeded")
                write = handler.write_line
                if write is None:
                    handler.logger.info(EVENT_SUCCEEDED, **fields)
                else:
                    write(EVENT_SUCCEEDED, fields)
            except Exception as exc:  # the attempt succeeded (and committed) all the same
                _unwritable(EVENT_SUCCEEDED, exc)
        if self._listeners:
            self._tell(handler, envelope, attempt, started, "succeeded")

    def retrying(
        self,
        handler: HandlerPlan,
        envelope: Envelope,
        attempt: int,
        started: float | None,
        error: BaseException,
        wait: float,
    ) -> None:
        try:
            handler.logger.warning(
                EVENT_RETRYING,
                **self._fields(envelope, attempt, started, "retrying"),
                error=f"{type(error).__qualname__}: {error}",
                retry_in_s=round(wait, 3),
            )
        except Exception as exc:
            _unwritable(EVENT_RETRYING, exc)
        if self._listeners:
            self._tell(handler, envelope, attempt, started, "retrying", error)

    def failed(
        self,
        handler: HandlerPlan,
        envelope: Envelope,
        attempt: int,
        started: float | None,
        error: BaseException,
    ) -> None:
        try:
            handler.logger.error(
                EVENT_FAILED,
                **self._fields(envelope, attempt, started, "failed"),
                error=f"{type(error).__qualname__}: {error}",
                exc_info=error,
            )
        except Exception as exc:
            _unwritable(EVENT_FAILED, exc)
        if self._listeners:
            self._tell(handler, envelope, attempt, started, "failed", error)


def _unwritable(event: str, error: Exception) -> None:
    """A log line could not be written (a processor raised, the file is closed).

    Handling goes on as if it had been: the attempt's outcome does not depend
    on its log line. As the standard library's ``Handler.handleError`` does,
    say so on stderr, the last place left.
    """
    with contextlib.suppress(Exception):  # no stderr either: nothing left to tell
        sys.stderr.write(
            f"messagebus: could not write the log line {event!r}: "
            f"{type(error).__qualname__}: {error}\n"
        )


class _WithFields:
    """A logger without ``bind()``, given fixed fields on every call."""

    __slots__ = ("_fields", "_logger")

    def __init__(self, logger: Any, fields: dict[str, Any]) -> None:
        self._logger = logger
        self._fields = fields

    def info(self, event: str, **fields: Any) -> None:
        self._logger.info(event, **self._fields, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._logger.warning(event, **self._fields, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._logger.error(event, **self._fields, **fields)
