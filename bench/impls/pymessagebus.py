"""pymessagebus, set up as its README shows.

Messages are NamedTuples; a ``CommandBus`` for commands (one handler each) and
a ``MessageBus`` for events. A handler raises an event by handling it on the
event bus, during its own handling (depth first): the library has no queue of
its own. S4's unit of work is driven by the handler itself, as in
"Architecture Patterns with Python" before its message bus.
"""

from __future__ import annotations

import typing
from importlib.metadata import version
from typing import Any

from pymessagebus import CommandBus, MessageBus

from bench._api import S8_NOT_APPLICABLE, Case, NotApplicable, Tally, expect
from bench.impls._domain import ORDERID, QTY, SKU, product_class
from bench.impls._project import fake_unit_of_work

TALLY = Tally()
hit = TALLY.hit


def versions() -> dict[str, str]:
    return {"pymessagebus": version("pymessagebus")}


class Allocate(typing.NamedTuple):
    orderid: str
    sku: str
    qty: int


class Allocated(typing.NamedTuple):
    orderid: str
    sku: str
    qty: int


class OrderPlaced(typing.NamedTuple):
    orderid: str
    sku: str
    qty: int


def allocate(cmd: Allocate) -> str:
    return cmd.orderid


def on_placed_1(event: OrderPlaced) -> None:
    hit()


def on_placed_2(event: OrderPlaced) -> None:
    hit()


def on_placed_3(event: OrderPlaced) -> None:
    hit()


def on_allocated(event: Allocated) -> None:
    hit()


def _s3_buses(locking: bool = True) -> CommandBus:
    events = MessageBus()
    events.add_handler(Allocated, on_allocated)

    def allocate_and_publish(cmd: Allocate) -> str:
        events.handle(Allocated(cmd.orderid, cmd.sku, cmd.qty))
        return cmd.orderid

    commands = CommandBus(locking=locking)
    commands.add_handler(Allocate, allocate_and_publish)
    return commands


def _s4_buses() -> CommandBus:
    fake_uow, repository = fake_unit_of_work()
    products = repository(key=lambda p: p.sku, items=[product_class(Allocated)(SKU)])
    events = MessageBus()
    events.add_handler(Allocated, on_allocated)

    def allocate_in_uow(cmd: Allocate) -> str:
        uow = fake_uow(products=products)
        try:
            product = uow.products.get(cmd.sku)
            product.allocate(cmd.orderid, cmd.qty)
            uow.commit()
            new_events = uow.collect_new_events()
        except BaseException:
            uow.rollback()
            raise
        finally:
            uow.close()
        for event in new_events:
            events.handle(event)
        return cmd.orderid

    commands = CommandBus()
    commands.add_handler(Allocate, allocate_in_uow)
    return commands


def _s6_bus(count: int) -> tuple[CommandBus, Any]:
    types = [type(f"Ping{i}", (Allocate,), {"__slots__": ()}) for i in range(count)]
    bus = CommandBus()
    for message_type in types:
        bus.add_handler(message_type, allocate)
    return bus, types[count // 2](ORDERID, SKU, QTY)


def setup(scenario: str, variant: str | None) -> Case:
    cmd: Any = Allocate(ORDERID, SKU, QTY)
    calls = 1
    if scenario == "S1":
        bus: Any = CommandBus()
        bus.add_handler(Allocate, allocate)
        calls = 0
    elif scenario == "S2":
        bus = MessageBus()
        for handler in (on_placed_1, on_placed_2, on_placed_3):
            bus.add_handler(OrderPlaced, handler)
        cmd = OrderPlaced(ORDERID, SKU, QTY)
        calls = 3
    elif scenario == "S3":
        bus = _s3_buses()
    elif scenario == "S7":
        # Its CommandBus refuses a message while it handles another (locking=True,
        # the default), which two threads sharing it do: they must turn it off.
        bus = _s3_buses(locking=False)
    elif scenario == "S4":
        bus = _s4_buses()
    elif scenario == "S6":
        bus, cmd = _s6_bus(int(variant or 100))
        calls = 0
    elif scenario == "S8":
        raise NotApplicable(S8_NOT_APPLICABLE)
    else:
        raise NotApplicable(
            "no per-handler structured logs (its logging middleware logs "
            "a line per message through the standard library, without the payload)"
        )

    def check() -> None:
        result = bus.handle(cmd)
        if scenario != "S2":
            expect(result, ORDERID, "bus.handle(cmd)")

    return Case(
        "bus.handle(cmd)",
        {"bus": bus, "cmd": cmd},
        kind="threads" if scenario == "S7" else "sync",
        threads=8,
        tally=TALLY if calls else None,
        calls_per_op=calls,
        check=check,
        note=(
            "CommandBus(locking=False): with the default (True), threads sharing it "
            "fail with CommandBusAlreadyProcessingAMessage"
            if scenario == "S7"
            else None
        ),
    )
