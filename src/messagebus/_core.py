"""The parts of dispatch that do no I/O, shared by both buses.

A bus is built from a :class:`~messagebus.Registry` into one
:class:`HandlerPlan` per registration: everything that can be decided before
the first message (injection, what the handler needs per attempt, unit of
work, retry policy, logger) is decided here, once. The sync and the async
driver (``_dispatch_sync.py``, generated from ``_dispatch_async.py``) only
run these plans.
"""

from __future__ import annotations

import contextvars
import datetime
import enum
import functools
import inspect
import time
import traceback
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from ._context import MESSAGE, PARENT, Envelope, metadata_of
from ._dependencies import CallPlan, check_dependencies, plan_call, unused_dependencies
from ._log import AttemptLog, _unwritable
from ._outbox import Outbox, refuse_routed_commands_with_handlers
from ._registry import Registration, Registry
from .exceptions import (
    ConfigurationError,
    DispatchError,
    Expected,
    MissingHandlersError,
    NotAMessageError,
    TooManyEventsError,
    UnusedDependencyError,
)
from .messages import Command, Event, Message, message_name, message_version
from .observe import DeadLetter, DeadLetterStore, Listener
from .retry import RetryPolicy, uses_clock
from .serialization import Serializer


class Shape(enum.Enum):
    """What a handler is given per attempt, besides its fixed dependencies."""

    #: ``handler(message)``: no unit of work, context or metadata.
    NOTHING = "nothing"
    #: ``handler(message, context)``: a Context only, no unit of work.
    CONTEXT = "context"
    #: ``handler(message, uow)``: the book's handler.
    UOW = "uow"
    #: Anything else: the unit of work, context and metadata as keywords.
    KEYWORDS = "keywords"


def shape_of(plan: CallPlan, has_uow: bool) -> Shape:
    if not has_uow and not plan.per_attempt:
        return Shape.NOTHING
    if not has_uow and plan.positional == (plan.context_parameter,):
        return Shape.CONTEXT
    if has_uow and plan.positional == (plan.uow_parameter,):
        return Shape.UOW
    return Shape.KEYWORDS


class HandlerPlan:
    """Everything decided at start-up about one handler of one message type."""

    __slots__ = (
        "call",
        "call_plan",
        "kind",
        "logger",
        "message_name",
        "message_version",
        "name",
        "policy",
        "registration",
        "runs",
        "shape",
        "timed",
        "uow_factory",
    )

    def __init__(
        self,
        registration: Registration,
        call_plan: CallPlan,
        policy: RetryPolicy,
        uow_factory: Callable[[], Any] | None,
    ) -> None:
        self.registration = registration
        self.call_plan = call_plan
        self.call = call_plan.call
        self.policy = policy
        self.uow_factory = uow_factory if registration.uow else None
        self.shape = shape_of(call_plan, self.uow_factory is not None)
        self.name = registration.name
        self.message_name = message_name(registration.message_type)
        self.message_version = message_version(registration.message_type)
        self.kind: Literal["command", "event"] = (
            "command" if issubclass(registration.message_type, Command) else "event"
        )
        #: A time-based stop (stop_after_delay) must count the first attempt
        #: too, which costs a clock read on every dispatch; attempt counts need none.
        self.timed = uses_clock(policy.stop)
        #: Set when the bus is built: the logger of its attempts, fields bound.
        self.logger: Any = None
        #: Set when the bus is built: every attempt of this handler for one
        #: envelope, as ``(result, events)``: ``runs[False]`` when successes are
        #: not logged, ``runs[True]`` when they are.
        self.runs: tuple[Callable[[Envelope], Any], Callable[[Envelope], Any]] = ()  # type: ignore[assignment]


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
    """What both buses do when they are built: resolve, check, and prepare to log.

    The drivers (``_dispatch_async.AsyncDispatch`` and its generated sync twin)
    add the running of the plans.
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
        listeners: Iterable[Listener],
        dead_letters: DeadLetterStore | None,
        dead_letter_commands: bool,
        middleware: Sequence[Callable[..., Any]],
        clock: Any,
        expected: Iterable[type[BaseException]],
        unused: Literal["warn", "error", "ignore"],
        max_events: int,
    ) -> None:
        if not isinstance(max_events, int) or max_events < 1:
            raise ConfigurationError(f"max_events must be a positive integer, not {max_events!r}")
        self._max_events = max_events
        if uow is not None and not callable(uow):
            raise TypeError(f"uow must be a factory of units of work, not {uow!r}")
        for item in middleware:
            if not callable(item):
                raise ConfigurationError(f"a middleware must be callable, not {item!r}")
        self._commands, self._events = build_plans(
            registry, dependencies or {}, uow, retry if retry is not None else RetryPolicy()
        )
        check_required(require_handlers, {**registry.routes, **self._commands})
        registry.freeze()  # a handler registered later would never be called: refused instead
        self._registry = registry
        self._serializer = serializer_for(registry)
        self._uow_factory = uow
        self._outbox = self._make_outbox(registry, uow)
        unused_names = unused_dependencies(
            dependencies or {}, [plan.call_plan for plan in self._plans()]
        )
        if unused_names and unused == "error":
            raise UnusedDependencyError(unused_names)
        self._dependency_names = tuple(dependencies or ())
        self._has_uow = uow is not None
        self._clock = time if clock is None else clock
        self._time_ns: Callable[[], int] = self._clock.time_ns
        self._perf_counter: Callable[[], float] = self._clock.perf_counter
        self._listeners = tuple(listeners)
        self._log = AttemptLog(logger, self._serializer, self._listeners, self._perf_counter)
        self._middleware = tuple(middleware)
        self._expected: tuple[type[BaseException], ...] = (Expected, *_exception_types(expected))
        gate = self._log.gate
        #: Whether successes are logged: a bool, or asked once per handle().
        self._gated = callable(gate)
        self._gate: Any = gate
        for plan in self._plans():
            plan.logger = self._log.bind(plan)
        if unused_names and unused == "warn":
            self._log.unused_dependencies(UnusedDependencyError(unused_names))
        self._dead_letters = dead_letters
        self._dead_letter_commands = dead_letter_commands

    def _make_outbox(self, registry: Registry, uow: Callable[[], Any] | None) -> Outbox | None:
        routes = registry.routes
        if not routes:
            return None
        refuse_routed_commands_with_handlers(routes, list(self._commands))
        if uow is None:
            raise ConfigurationError(
                "messages are routed out of the process, and the bus has no unit of work to "
                "write them to the outbox in: give it uow=..."
            )
        return Outbox(routes, self._serializer)

    def _notify(self, envelope: Envelope) -> None:
        metadata = metadata_of(envelope)
        for listener in self._listeners:
            try:
                listener.message_dispatched(envelope[MESSAGE], metadata)
            except Exception as exc:  # a listener changes no outcome, nor stops the queue
                _unwritable(f"message_dispatched of {listener!r}", exc)

    def _dead_letter(
        self, plan: HandlerPlan, envelope: Envelope, attempts: int, error: BaseException
    ) -> DeadLetter | None:
        """The dead letter to store for a handling given up on, or None."""
        if self._dead_letters is None or _redelivering.get():
            return None
        if plan.kind == "command" and not self._dead_letter_commands:
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
            failed_at=datetime.datetime.fromtimestamp(self._time_ns() / 1e9, datetime.timezone.utc),
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

    def handlers(self) -> dict[type[Message], tuple[str, ...]]:
        """What this bus handles: each message type, and its handlers' names in the order run.

        The same wiring that ``messagebus graph`` draws; a command has one handler.
        """
        wired: dict[type[Message], tuple[str, ...]] = {
            message_type: (plan.name,) for message_type, plan in self._commands.items()
        }
        wired.update(
            (message_type, tuple(plan.name for plan in plans))
            for message_type, plans in self._events.items()
        )
        return wired

    def graph(self, format: Literal["mermaid", "dot", "svg"] = "mermaid") -> str:
        """The message-flow graph of this bus's wiring, as :meth:`Registry.graph` draws it.

        The same text as ``messagebus graph --app ...``, for a notebook or a test.
        """
        return self._registry.graph(format)

    def check(self, require_handlers: Iterable[type[Command[Any]] | types.ModuleType]) -> None:
        """Fail when a required command has no handler: the start-up check, asked later.

        Args:
            require_handlers: Command types, or modules whose commands are all
                required (as ``MessageBus(require_handlers=...)`` takes them).

        Raises:
            MissingHandlersError: Naming every required command without a handler.
        """
        check_required(require_handlers, self._commands)

    def __repr__(self) -> str:
        handlers = sum(1 for _ in self._plans())
        parts = [
            f"commands={len(self._commands)}",
            f"events={len(self._events)}",
            f"handlers={handlers}",
            f"dependencies={sorted(self._dependency_names)!r}",
            f"uow={'yes' if self._has_uow else 'no'}",
        ]
        if self._middleware:
            parts.append(f"middleware={len(self._middleware)}")
        if self._listeners:
            parts.append(f"listeners={len(self._listeners)}")
        if self._dead_letters is not None:
            parts.append(f"dead_letters={type(self._dead_letters).__name__}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def serializer(self) -> Serializer:
        """A serializer that knows every message type this bus handles."""
        return self._serializer

    @property
    def dead_letters(self) -> DeadLetterStore | None:
        """The store of the handlings this bus gave up on, if it has one."""
        return self._dead_letters


def _exception_types(items: Iterable[type[BaseException]]) -> tuple[type[BaseException], ...]:
    types_ = tuple(items)
    for item in types_:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(f"expected= takes exception classes, not {item!r}")
    return types_


def too_many_events(limit: int, last: Envelope) -> TooManyEventsError:
    """The error for a handle() past ``max_events``, naming the chain that led to ``last``."""
    chain: list[str] = []
    envelope: Envelope | None = last
    while envelope is not None and envelope[MESSAGE] is not None and len(chain) < 12:
        chain.append(message_name(type(envelope[MESSAGE])))
        envelope = envelope[PARENT]
    return TooManyEventsError(limit, chain[::-1])


def is_async_callable(function: Any) -> bool:
    """Whether calling ``function`` gives something to await or iterate asynchronously.

    ``async def`` functions, async generators, partials of them, and objects
    whose ``__call__`` is one of these.
    """
    target: Any = function
    while isinstance(target, functools.partial):
        target = target.func
    candidates = (target, getattr(target, "__call__", None))  # noqa: B004 - an object's own method
    return any(
        inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate)
        for candidate in candidates
        if candidate is not None
    )


def serializer_for(registry: Registry) -> Serializer:
    """A serializer that knows every message type the registry handles or routes."""
    return Serializer(dict.fromkeys([*registry.commands, *registry.events, *registry.routes]))


#: Set while a dead letter is redelivered: its failure updates that letter
#: instead of adding another.
_redelivering: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "messagebus_redelivering", default=False
)
