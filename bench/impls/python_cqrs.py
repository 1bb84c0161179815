"""python-cqrs (async only), set up as its README shows.

Requests and events are its default dataclass-based ``Request``, ``Response``
and ``DomainEvent``; handlers are classes resolved by the DI container (``di``)
for each message; ``bootstrap`` builds the mediators (and adds its logging
middleware, as it does by default). A command handler raises domain events
by putting them on its ``events``; the mediator dispatches them after it.
"""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import version
from typing import Any

import cqrs
import di
from cqrs.bootstrap import events as event_bootstrap
from cqrs.bootstrap import requests as request_bootstrap

from bench._api import S8_NOT_APPLICABLE, Case, NotApplicable, Tally, expect
from bench.impls._domain import ORDERID, QTY, SKU, product_class
from bench.impls._project import fake_unit_of_work

TALLY = Tally()
hit = TALLY.hit


def versions() -> dict[str, str]:
    return {"python-cqrs": version("python-cqrs"), "di": version("di")}


class Allocation(cqrs.Response):
    orderid: str


class Allocate(cqrs.Request[Allocation]):
    orderid: str
    sku: str
    qty: int


class Allocated(cqrs.DomainEvent):
    orderid: str
    sku: str
    qty: int


class OrderPlaced(cqrs.DomainEvent):
    orderid: str
    sku: str
    qty: int


class AllocateHandler(cqrs.RequestHandler[Allocate, Allocation]):
    async def handle(self, request: Allocate) -> Allocation:
        return Allocation(orderid=request.orderid)


class AllocateAndRaiseHandler(cqrs.RequestHandler[Allocate, Allocation]):
    def __init__(self) -> None:
        self._events: list[cqrs.DomainEvent] = []

    @property
    def events(self) -> list[cqrs.DomainEvent]:
        return self._events

    async def handle(self, request: Allocate) -> Allocation:
        self._events.append(Allocated(orderid=request.orderid, sku=request.sku, qty=request.qty))
        return Allocation(orderid=request.orderid)


class OnPlaced1(cqrs.EventHandler[OrderPlaced]):
    async def handle(self, event: OrderPlaced) -> None:
        hit()


class OnPlaced2(cqrs.EventHandler[OrderPlaced]):
    async def handle(self, event: OrderPlaced) -> None:
        hit()


class OnPlaced3(cqrs.EventHandler[OrderPlaced]):
    async def handle(self, event: OrderPlaced) -> None:
        hit()


class OnAllocated(cqrs.EventHandler[Allocated]):
    async def handle(self, event: Allocated) -> None:
        hit()


class UnitsOfWork:
    """Opens S4's fake (async) unit of work; injected into the handler by the container."""

    factory: Any = None

    def __call__(self) -> Any:
        return self.factory()


class AllocateInUowHandler(cqrs.RequestHandler[Allocate, Allocation]):
    def __init__(self, units_of_work: UnitsOfWork) -> None:
        self._units_of_work = units_of_work
        self._events: list[cqrs.DomainEvent] = []

    @property
    def events(self) -> list[cqrs.DomainEvent]:
        return self._events

    async def handle(self, request: Allocate) -> Allocation:
        uow = self._units_of_work()
        try:
            product = uow.products.get(request.sku)
            if hasattr(product, "__await__"):  # FakeAsyncUnitOfWork's repositories may be async
                product = await product
            product.allocate(request.orderid, request.qty)
            await uow.commit()
            self._events.extend(uow.collect_new_events())
        except BaseException:
            await uow.rollback()
            raise
        finally:
            await uow.close()
        return Allocation(orderid=request.orderid)


def _mediator(request: type, handler: type, events: dict[type, list[type]] | None = None) -> Any:
    def commands_mapper(mapper: cqrs.RequestMap) -> None:
        mapper.bind(request, handler)

    def events_mapper(mapper: cqrs.EventMap) -> None:
        for event, handlers in (events or {}).items():
            for event_handler in handlers:
                mapper.bind(event, event_handler)

    return request_bootstrap.bootstrap(
        di_container=di.Container(),
        commands_mapper=commands_mapper,
        domain_events_mapper=events_mapper,
    )


def setup(scenario: str, variant: str | None) -> Case:
    cmd: Any = Allocate(orderid=ORDERID, sku=SKU, qty=QTY)
    stmt = "result = await mediator.send(cmd)"
    calls = 1
    if scenario == "S1":
        mediator = _mediator(Allocate, AllocateHandler)
        calls = 0
    elif scenario == "S2":

        def events_mapper(mapper: cqrs.EventMap) -> None:
            for event_handler in (OnPlaced1, OnPlaced2, OnPlaced3):
                mapper.bind(OrderPlaced, event_handler)

        mediator = event_bootstrap.bootstrap(
            di_container=di.Container(), events_mapper=events_mapper
        )
        cmd = OrderPlaced(orderid=ORDERID, sku=SKU, qty=QTY)
        stmt = "result = await mediator.send(cmd)"
        calls = 3
    elif scenario == "S3":
        mediator = _mediator(Allocate, AllocateAndRaiseHandler, {Allocated: [OnAllocated]})
    elif scenario == "S4":
        fake_uow, repository = fake_unit_of_work(asynchronous=True)
        products = repository(key=lambda p: p.sku, items=[product_class(Allocated)(SKU)])
        UnitsOfWork.factory = staticmethod(lambda: fake_uow(products=products))
        mediator = _mediator(Allocate, AllocateInUowHandler, {Allocated: [OnAllocated]})
    elif scenario == "S6":
        count = int(variant or 100)
        # The base applies @dataclass to each subclass, as it does for every request.
        types = [type(f"Ping{i}", (Allocate,), {"__module__": __name__}) for i in range(count)]

        def commands_mapper(mapper: cqrs.RequestMap) -> None:
            for request_type in types:
                mapper.bind(request_type, AllocateHandler)

        mediator = request_bootstrap.bootstrap(
            di_container=di.Container(), commands_mapper=commands_mapper
        )
        cmd = types[count // 2](orderid=ORDERID, sku=SKU, qty=QTY)
        calls = 0
    elif scenario == "S7":
        raise NotApplicable("async only: S7 shares a bus between threads")
    elif scenario == "S8":
        raise NotApplicable(S8_NOT_APPLICABLE)
    else:
        raise NotApplicable(
            "no per-handler structured logs (its logging middleware logs "
            "each request at DEBUG through the standard library)"
        )
    # The package sets its "cqrs" logger to DEBUG when imported, so that every
    # request makes log records; quiet, as messagebus is in these scenarios.
    logging.getLogger("cqrs").setLevel(logging.WARNING)
    loop = asyncio.new_event_loop()
    namespace = {"mediator": mediator, "cmd": cmd}

    def check() -> None:
        async def once() -> Any:
            return await mediator.send(cmd)

        result = loop.run_until_complete(once())
        if scenario != "S2":
            expect(result.orderid, ORDERID, "(await mediator.send(cmd)).orderid")

    return Case(
        stmt,
        namespace,
        kind="async",
        loop=loop,
        tally=TALLY if calls else None,
        calls_per_op=calls,
        check=check,
        note='"cqrs" logger at WARNING (the package sets DEBUG on import)',
    )
