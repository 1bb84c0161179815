"""The PyPI package called messagebus (mardiros/messagebus), set up as its cookbook shows.

Messages are its pydantic Command and Event with their metadata given in the
class; handlers take the message and the unit of work and are added with
``add_listener``. A dispatch runs in a transaction of the application's unit
of work (``with uow as transaction: bus.handle(msg, transaction);
transaction.commit()``), here an in-memory one as in its test suite. A
handler raises an event by appending it to a model seen by a repository of
the unit of work, which the bus collects after the handler.

It shares its import name with this project: it runs only from its own environment.
"""

from __future__ import annotations

import threading
from importlib.metadata import version
from typing import Any

from pydantic import ConfigDict

from bench._api import S8_NOT_APPLICABLE, Case, NotApplicable, Tally, expect
from bench.impls._domain import ORDERID, QTY, SKU

# The PyPI package of that name, from its own environment (not this project).
from messagebus import (
    Command,
    Event,
    Metadata,
    Model,
    SyncAbstractRepository,
    SyncAbstractUnitOfWork,
    SyncMessageBus,
)

TALLY = Tally()
hit = TALLY.hit


def versions() -> dict[str, str]:
    return {"messagebus (PyPI)": version("messagebus"), "pydantic": version("pydantic")}


class Allocate(Command):
    orderid: str
    sku: str
    qty: int
    metadata: Metadata = Metadata(name="allocate", schema_version=1)


class Allocated(Event):
    orderid: str
    sku: str
    qty: int
    metadata: Metadata = Metadata(name="allocated", schema_version=1)


class OrderPlaced(Event):
    orderid: str
    sku: str
    qty: int
    metadata: Metadata = Metadata(name="order_placed", schema_version=1)


class Product(Model):
    sku: str
    allocated: int = 0


class ProductRepository(SyncAbstractRepository[Product]):
    """In memory, as the repositories of its cookbook's tests: a dict; reads are seen."""

    def __init__(self, products: dict[str, Product]) -> None:
        self.seen = []
        self.products = products

    def get(self, sku: str) -> Product:
        product = self.products[sku]
        self.seen.append(product)
        return product


class UnitOfWork(SyncAbstractUnitOfWork[ProductRepository, Any, Any]):
    def __init__(self, products: dict[str, Product]) -> None:
        self.products = ProductRepository(products)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def allocate(cmd: Allocate, uow: Any) -> str:
    return cmd.orderid


def on_placed_1(event: OrderPlaced, uow: Any) -> None:
    hit()


def on_placed_2(event: OrderPlaced, uow: Any) -> None:
    hit()


def on_placed_3(event: OrderPlaced, uow: Any) -> None:
    hit()


def allocate_and_raise(cmd: Allocate, uow: Any) -> str:
    product = uow.products.get(cmd.sku)
    product.messages.append(Allocated(orderid=cmd.orderid, sku=cmd.sku, qty=cmd.qty))
    return cmd.orderid


def on_allocated(event: Allocated, uow: Any) -> None:
    hit()


_STMT = """
with uow as transaction:
    result = bus.handle(cmd, transaction)
    transaction.commit()
"""

# S7: a unit of work per thread (its transaction state lives on the unit of work).
_STMT_THREADS = """
with local.uow as transaction:
    result = bus.handle(cmd, transaction)
    transaction.commit()
"""


def _s6_bus(count: int) -> tuple[SyncMessageBus[Any], Any]:
    deferred = ConfigDict(defer_build=True)  # schemas built on first use, not 10,000 at start
    types = [
        type(f"Ping{i}", (Allocate,), {"__module__": __name__, "model_config": deferred})
        for i in range(count)
    ]
    bus: SyncMessageBus[Any] = SyncMessageBus()
    for message_type in types:
        bus.add_listener(message_type, allocate)
    return bus, types[count // 2](orderid=ORDERID, sku=SKU, qty=QTY)


def setup(scenario: str, variant: str | None) -> Case:
    bus: SyncMessageBus[Any] = SyncMessageBus()
    cmd: Any = Allocate(orderid=ORDERID, sku=SKU, qty=QTY)
    products = {SKU: Product(sku=SKU)}
    calls = 1
    if scenario == "S1":
        bus.add_listener(Allocate, allocate)
        calls = 0
    elif scenario == "S2":
        for handler in (on_placed_1, on_placed_2, on_placed_3):
            bus.add_listener(OrderPlaced, handler)
        cmd = OrderPlaced(orderid=ORDERID, sku=SKU, qty=QTY)
        calls = 3
    elif scenario in ("S3", "S7"):
        bus.add_listener(Allocate, allocate_and_raise)
        bus.add_listener(Allocated, on_allocated)
    elif scenario == "S4":
        raise NotApplicable(
            "its own unit of work is already in S1-S3 (a dispatch needs one); "
            "messagebus.testing's FakeUnitOfWork cannot be imported beside it "
            "(both are the top-level package `messagebus`)"
        )
    elif scenario == "S6":
        bus, cmd = _s6_bus(int(variant or 100))
        calls = 0
    elif scenario == "S8":
        raise NotApplicable(S8_NOT_APPLICABLE)
    else:
        raise NotApplicable("no per-handler structured logs (it counts metrics, and logs nothing)")

    class Local(threading.local):
        def __init__(self) -> None:
            self.uow = UnitOfWork(products)

    namespace = {"bus": bus, "cmd": cmd, "uow": UnitOfWork(products), "local": Local()}
    stmt = _STMT_THREADS if scenario == "S7" else _STMT

    def check() -> None:
        exec(stmt, namespace)
        if scenario != "S2":
            expect(namespace["result"], ORDERID, "bus.handle(cmd, transaction)")

    return Case(
        stmt,
        namespace,
        kind="threads" if scenario == "S7" else "sync",
        threads=8,
        tally=TALLY if calls else None,
        calls_per_op=calls,
        check=check,
        note="in-memory unit of work; one transaction per dispatch",
    )
