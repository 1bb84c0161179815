"""The behaviour of DESIGN.md §3-5, run against both buses so they cannot drift apart.

Each test is written once, with plain functions as handlers; for the async bus
the harness turns them into ``async def`` wrappers with the same signature and
uses the async fake unit of work.
"""



from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import tenacity

from messagebus import (
    AsyncMessageBus,
    Command,
    Context,
    Event,
    MessageBus,
    Metadata,
    NoHandlerError,
    NotAMessageError,
    Registry,
    RetryPolicy,
)
from messagebus.testing import FakeAsyncUnitOfWork, FakeUnitOfWork, InMemoryRepository


@attrs.frozen
class Allocate(Command[str]):
    sku: str


@attrs.frozen
class Allocated(Event):
    sku: str
    n: int = 0


@attrs.frozen
class Followed(Event):
    n: int


class Product:
    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.allocations = 0
        self.events: list[Event] = []


class Harness:
    """One bus of either kind, driven through a synchronous interface."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.registry = Registry()
        self.products: InMemoryRepository[Product] = InMemoryRepository(key=lambda p: p.sku)
        self.uows: list[Any] = []
        self.waits: list[float] = []
        self.bus: Any = None

    def register(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
            target = handler
            if self.kind == "async":

                @functools.wraps(handler)
                async def target(*args: Any, **kwargs: Any) -> Any:
                    return handler(*args, **kwargs)

            self.registry.register(target, **options)
            return handler

        return decorate if fn is None else decorate(fn)

    def uow(self) -> Any:
        uow_type = FakeAsyncUnitOfWork if self.kind == "async" else FakeUnitOfWork
        uow = uow_type(products=self.products)
        self.uows.append(uow)
        return uow

    def build(self, **options: Any) -> None:
        options.setdefault("uow", self.uow)
        if self.kind == "async":

            async def sleep(seconds: float) -> None:
                self.waits.append(seconds)

            self.bus = AsyncMessageBus(self.registry, sleep=sleep, **options)
        else:
            self.bus = MessageBus(self.registry, sleep=self.waits.append, **options)

    def handle(self, message: Any, **options: Any) -> Any:
        if self.bus is None:
            self.build()
        if self.kind == "async":
            return asyncio.run(self.bus.handle(message, **options))
        return self.bus.handle(message, **options)


@pytest.fixture(params=["sync", "async"])
def h(request: pytest.FixtureRequest) -> Harness:
    return Harness(request.param)


def test_the_command_handlers_result_is_returned(h: Harness) -> None:
    h.register(lambda cmd, uow: f"allocated {cmd.sku}", message=Allocate)

    assert "allocated lamp" == h.handle(Allocate("lamp"))


def test_a_commands_failure_reaches_the_caller_as_the_original_exception(h: Harness) -> None:
    error = ValueError("no stock")

    @h.register
    def allocate(cmd: Allocate, uow: Any) -> str:
        raise error

    with pytest.raises(ValueError, match="no stock") as caught:
        h.handle(Allocate("lamp"))
    assert caught.value is error


def test_events_are_handled_breadth_first_in_the_order_raised(h: Harness) -> None:
    handled: list[str] = []

    @h.register
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated("a", 1))
        context.emit(Allocated("b", 2))
        return "ok"

    @h.register
    def on_allocated(event: Allocated, context: Context) -> None:
        handled.append(f"allocated {event.sku}")
        context.emit(Followed(event.n))

    @h.register
    def on_followed(event: Followed) -> None:
        handled.append(f"followed {event.n}")

    h.handle(Allocate("lamp"))

    assert ["allocated a", "allocated b", "followed 1", "followed 2"] == handled


def test_an_event_handlers_failure_stops_neither_the_others_nor_the_caller(h: Harness) -> None:
    handled: list[str] = []

    @h.register
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register
    def first(event: Allocated) -> None:
        raise ValueError("broken handler")

    @h.register
    def second(event: Allocated) -> None:
        handled.append(event.sku)

    assert "ok" == h.handle(Allocate("lamp"))
    assert ["lamp"] == handled


def test_each_attempt_gets_a_fresh_unit_of_work_committed_or_rolled_back(h: Harness) -> None:
    attempts: list[int] = []

    @h.register
    def allocate(cmd: Allocate, uow: Any) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise TimeoutError("busy")
        return "ok"

    assert "ok" == h.handle(Allocate("lamp"))
    assert [(0, 1, True), (0, 1, True), (1, 0, True)] == [
        (u.committed, u.rolled_back, u.closed) for u in h.uows
    ]
    assert 2 == len(h.waits)


def test_no_event_of_a_rolled_back_attempt_is_ever_dispatched(h: Harness) -> None:
    h.products.add(Product("lamp"))
    handled: list[int] = []

    @h.register
    def allocate(cmd: Allocate, uow: Any) -> str:
        product = uow.products.get(cmd.sku)
        product.allocations += 1
        product.events.append(Allocated(cmd.sku, product.allocations))
        if len(h.uows) == 1:
            raise TimeoutError("serialisation failure")
        return "ok"

    @h.register(uow=False)
    def on_allocated(event: Allocated) -> None:
        handled.append(event.n)

    h.handle(Allocate("lamp"))

    assert [1] == handled
    assert 1 == h.products.get("lamp").allocations


def test_a_domain_error_gets_one_attempt_and_a_transient_one_is_retried(h: Harness) -> None:
    calls: list[str] = []

    @h.register(retry=RetryPolicy(stop=tenacity.stop_after_attempt(4)))
    def allocate(cmd: Allocate, uow: Any) -> str:
        calls.append(cmd.sku)
        raise (KeyError if cmd.sku == "domain" else ConnectionError)(cmd.sku)

    with pytest.raises(KeyError):
        h.handle(Allocate("domain"))
    with pytest.raises(ConnectionError):
        h.handle(Allocate("transient"))

    assert ["domain"] + ["transient"] * 4 == calls


def test_a_raised_event_is_caused_by_the_command_and_shares_its_correlation(h: Harness) -> None:
    seen: dict[str, Metadata] = {}

    @h.register
    def allocate(cmd: Allocate, context: Context, metadata: Metadata) -> str:
        seen["command"] = metadata
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register
    def on_allocated(event: Allocated, metadata: Metadata) -> None:
        seen["event"] = metadata

    given = Metadata.new()
    h.handle(Allocate("lamp"), metadata=given)

    assert given == seen["command"]
    assert (given.message_id, given.correlation_id) == (
        seen["event"].causation_id,
        seen["event"].correlation_id,
    )


def test_a_command_without_a_handler_and_a_non_message_are_refused(h: Harness) -> None:
    h.build()
    with pytest.raises(NoHandlerError, match="Allocate"):
        h.handle(Allocate("lamp"))
    with pytest.raises(NotAMessageError, match="dict"):
        h.handle({"sku": "lamp"})


def test_an_event_with_no_handlers_is_fine_and_its_followers_are_handled(h: Harness) -> None:
    handled: list[int] = []

    @h.register
    def on_allocated(event: Allocated, context: Context) -> None:
        context.emit(Followed(event.n))

    @h.register
    def on_followed(event: Followed) -> None:
        handled.append(event.n)

    h.handle(Allocated("lamp", 7))
    h.handle(Followed(8))

    assert [7, 8] == handled
