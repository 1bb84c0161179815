"""One bus of either kind behind a synchronous interface, for tests run against both.

A test is written once, with plain functions as handlers; for the async bus
the :class:`Harness` turns each one into an ``async def`` wrapper with the same
signature (and name), uses the async fake unit of work, awaits the injected
sleep, and runs every ``handle`` in its own event loop. The ``h`` fixture of
``conftest.py`` gives each test one harness per kind; :meth:`Harness.registered`
is what the bus was given for a handler (an error naming the handler names it).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

from messagebus import AsyncMessageBus, MessageBus, Registry
from messagebus.testing import FakeAsyncUnitOfWork, FakeUnitOfWork, InMemoryRepository

KINDS = ("sync", "async")

F = TypeVar("F", bound=Callable[..., Any])


class AsyncUowWithPlainRepositories(FakeAsyncUnitOfWork):
    """The async fake, with repositories a plain (wrapped) handler can call."""

    def _present(self, view: Any) -> Any:
        return view


class Harness:
    """One bus of either kind, driven through a synchronous interface.

    ``products`` is the repository the fake units of work made by :meth:`uow`
    share (its aggregates are keyed by their ``sku``); ``uows`` are those made
    so far, and ``waits`` the waits between retries, recorded instead of slept.
    """

    def __init__(self, kind: str) -> None:
        assert kind in KINDS
        self.kind = kind
        self.registry = Registry()
        self.products: InMemoryRepository[Any] = InMemoryRepository(key=lambda p: p.sku)
        self.uows: list[Any] = []
        self.waits: list[float] = []
        self.bus: Any = None
        self._registered: dict[Callable[..., Any], Callable[..., Any]] = {}

    @property
    def is_async(self) -> bool:
        return self.kind == "async"

    @overload
    def register(self, fn: F, **options: Any) -> F: ...

    @overload
    def register(self, fn: None = None, **options: Any) -> Callable[[F], F]: ...

    def register(self, fn: F | None = None, **options: Any) -> F | Callable[[F], F]:
        """As ``Registry.register``, for a plain function; returns it unchanged."""

        def decorate(handler: F) -> F:
            target = handler
            if self.is_async:

                @functools.wraps(handler)
                async def target(*args: Any, **kwargs: Any) -> Any:
                    return handler(*args, **kwargs)

            self.registry.register(target, **options)
            self._registered[handler] = target
            return handler

        return decorate if fn is None else decorate(fn)

    def registered(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """What the registry was given for ``handler``: itself, or its async wrapper."""
        return self._registered[handler]

    def uow(self) -> Any:
        """A new fake unit of work of the bus's kind, over ``products``."""
        uow_type = AsyncUowWithPlainRepositories if self.is_async else FakeUnitOfWork
        uow = uow_type(products=self.products)
        self.uows.append(uow)
        return uow

    def build(self, **options: Any) -> Any:
        """Build the bus; by default with fake units of work and recorded waits.

        ``sleep`` is a plain function for either kind: the async bus awaits a
        wrapper of it. Returns the bus.
        """
        options.setdefault("uow", self.uow)
        sleep = options.pop("sleep", self.waits.append)
        if self.is_async:

            async def awaited_sleep(seconds: float) -> None:
                sleep(seconds)

            self.bus = AsyncMessageBus(self.registry, sleep=awaited_sleep, **options)
        else:
            self.bus = MessageBus(self.registry, sleep=sleep, **options)
        return self.bus

    def handle(self, message: Any, **options: Any) -> Any:
        """``bus.handle``, run to its end; builds the bus with defaults if need be."""
        return self._call("handle", message, **options)

    def redeliver(self, message: Any, **options: Any) -> Any:
        """``bus.redeliver``, run to its end."""
        return self._call("redeliver", message, **options)

    def call(self, method: str, *args: Any, **options: Any) -> Any:
        """Any method of the bus (``send``, ...), run to its end."""
        return self._call(method, *args, **options)

    def _call(self, method: str, *args: Any, **options: Any) -> Any:
        if self.bus is None:
            self.build()
        result = getattr(self.bus, method)(*args, **options)
        return asyncio.run(result) if self.is_async else result
