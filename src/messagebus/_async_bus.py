"""The asyncio message bus: its constructor and types; dispatch is in ``_dispatch_async``.

It drives the same handler plans as the sync bus, on the same dispatch path
written once (the sync one is generated from it). Handlers must be
``async def``: a plain function is refused when the bus is built, since
running it on the event loop would block every other task, and running it in
a thread would take it out of the unit of work's transaction.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ._core import is_async_callable
from ._dispatch_async import AsyncDispatch
from ._registry import Registry
from .exceptions import ConfigurationError
from .messages import Command, Event, Message, Metadata
from .middleware import AsyncMiddleware
from .observe import DeadLetterStore, Listener, check_store_for_async
from .retry import RetryPolicy

__all__ = ["AsyncMessageBus"]

R = TypeVar("R")


class AsyncMessageBus(AsyncDispatch):
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
        logger: As for :class:`MessageBus`.
        require_handlers: As for :class:`MessageBus`.
        listeners: As for :class:`MessageBus`.
        dead_letters: As for :class:`MessageBus`; its ``add`` may be a coroutine.
        dead_letter_commands: As for :class:`MessageBus`.
        middleware: As for :class:`MessageBus`, each an ``async def`` function.
        clock: As for :class:`MessageBus`.
        expected: As for :class:`MessageBus`.
        unused_dependencies: As for :class:`MessageBus`.
        max_events: As for :class:`MessageBus`.

    Raises:
        ConfigurationError: A handler or a middleware is not an ``async def`` function.
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
        middleware: Sequence[AsyncMiddleware] = (),
        clock: Any = None,
        expected: Iterable[type[BaseException]] = (),
        unused_dependencies: Literal["warn", "error", "ignore"] = "warn",
        max_events: int = 100_000,
    ) -> None:
        if dead_letters is not None:
            check_store_for_async(dead_letters)  # a blocking store would stall the loop
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
            if not is_async_callable(plan.registration.handler):
                raise ConfigurationError(
                    f"AsyncMessageBus runs async handlers, and {plan.name} is a plain "
                    "function: make it `async def` (do blocking work inside it with "
                    "`await asyncio.to_thread(...)`), or use MessageBus"
                )
        for item in self._middleware:
            if not is_async_callable(item):
                raise ConfigurationError(
                    f"AsyncMessageBus awaits its middleware, and {item!r} is a plain "
                    "function: make it `async def`, or use it with MessageBus"
                )
        self._sleep = sleep
        self._build_runs()

    if TYPE_CHECKING:

        @overload  # type: ignore[override]
        async def handle(self, message: Command[R], *, metadata: Metadata | None = None) -> R: ...

        @overload
        async def handle(self, message: Event, *, metadata: Metadata | None = None) -> None: ...

        async def handle(self, message: Message, *, metadata: Metadata | None = None) -> Any:
            """Handle a message and every event that follows from it, breadth first.

            As :meth:`MessageBus.handle`, awaited.
            """
