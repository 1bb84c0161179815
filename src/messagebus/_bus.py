"""The synchronous message bus: its constructor and types; dispatch is in ``_dispatch_sync``."""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ._core import is_async_callable
from ._dispatch_sync import SyncDispatch
from ._registry import Registry
from .exceptions import ConfigurationError
from .messages import Command, Event, Message, Metadata
from .middleware import Middleware
from .observe import DeadLetterStore, Listener
from .retry import RetryPolicy

__all__ = ["MessageBus"]

R = TypeVar("R")


class MessageBus(SyncDispatch):
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
        logger: A structlog logger (or one with the same methods). By default
            structlog's ``get_logger("messagebus")`` when structlog is
            configured, else one readable line a record through the standard
            library's ``logging.getLogger("messagebus")``. Configure logging
            before building the bus.
        require_handlers: Command types, or modules of command types, that
            must have a handler; checked now.
        listeners: Told of every message dispatched and every attempt
            (:class:`~messagebus.observe.Listener`).
        dead_letters: Where event handlings given up on are stored
            (:class:`~messagebus.observe.DeadLetterStore`).
        dead_letter_commands: Store failed commands there too (they also
            reach the caller).
        middleware: Wrap every handler attempt, in this order, the first
            outermost (:mod:`messagebus.middleware`).
        clock: Where times come from: an object with ``time_ns()`` (creation
            times) and ``perf_counter()`` (durations, time-based retry stops);
            by default the :mod:`time` module. Tests pass a controlled one.
        expected: Exception classes that are expected outcomes (as if they
            derived from :class:`~messagebus.Expected`): raised to the caller
            of a command, not retried, logged at INFO without a traceback,
            never dead letters.
        unused_dependencies: What to do about dependencies that no handler
            asks for (often a misspelt parameter): ``"warn"`` (one
            ``unused_dependencies`` log line, at WARNING), ``"error"``
            (:class:`~messagebus.UnusedDependencyError`), or ``"ignore"``.
        max_events: How many events one :meth:`handle` may raise in all, so
            that a chain of handlers that raise each other's events forever
            ends with :class:`~messagebus.TooManyEventsError` instead of
            running out of memory.

    Raises:
        ConfigurationError: A handler or a middleware is an ``async def``
            function (use AsyncMessageBus).
        UnresolvedDependencyError: A handler asks for something nothing provides.
        MissingHandlersError: A required command has no handler.
        UnusedDependencyError: With ``unused_dependencies="error"``.
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
        middleware: Sequence[Middleware] = (),
        clock: Any = None,
        expected: Iterable[type[BaseException]] = (),
        unused_dependencies: Literal["warn", "error", "ignore"] = "warn",
        max_events: int = 100_000,
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
            middleware=middleware,
            clock=clock,
            expected=expected,
            unused=unused_dependencies,
            max_events=max_events,
        )
        for plan in self._plans():
            if is_async_callable(plan.registration.handler):
                raise ConfigurationError(
                    f"MessageBus calls handlers without awaiting them, and {plan.name} is "
                    "asynchronous (async def): it would never run. Use AsyncMessageBus, "
                    "or make the handler a plain function"
                )
        if dead_letters is not None and is_async_callable(getattr(dead_letters, "add", None)):
            raise ConfigurationError(
                f"MessageBus calls its dead-letter store without awaiting it, and "
                f"{type(dead_letters).__qualname__}.add() is asynchronous: its letters would "
                "never be stored; use a synchronous store, or AsyncMessageBus"
            )
        for item in self._middleware:
            if is_async_callable(item):
                raise ConfigurationError(
                    f"MessageBus runs plain middleware, and {item!r} is asynchronous: "
                    "use it with AsyncMessageBus, or make it a plain function"
                )
        self._sleep = sleep
        self._build_runs()

    if TYPE_CHECKING:

        @overload  # type: ignore[override]
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
