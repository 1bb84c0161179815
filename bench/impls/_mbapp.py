"""The handlers and messages of the scenarios, written for messagebus.

The floor calls these same functions directly; the messagebus implementation
registers them. Command handlers are checked by what they return; event
handlers count their calls (``hit()``: one C call), so that the worker can check
that every timed operation reached every event handler. The async twins are
for the async floor and messagebus's AsyncMessageBus.
"""

from __future__ import annotations

from typing import Any

import attrs

from bench._api import Tally
from bench.impls._domain import product_class
from messagebus import AbstractUnitOfWork, Command, Context, Event

TALLY = Tally()
hit = TALLY.hit


@attrs.frozen
class Allocate(Command[str]):
    orderid: str
    sku: str
    qty: int


@attrs.frozen
class Allocated(Event):
    orderid: str
    sku: str
    qty: int


@attrs.frozen
class OrderPlaced(Event):
    orderid: str
    sku: str
    qty: int


Product = product_class(Allocated)


# S1, S5, S6: a trivial command handler.
def allocate(cmd: Allocate) -> str:
    return cmd.orderid


# S2: three trivial event handlers.
def on_placed_1(event: OrderPlaced) -> None:
    hit()


def on_placed_2(event: OrderPlaced) -> None:
    hit()


def on_placed_3(event: OrderPlaced) -> None:
    hit()


# S3, S7: a command handler that raises an event, and its handler (also S4's).
def allocate_and_emit(cmd: Allocate, context: Context) -> str:
    context.emit(Allocated(cmd.orderid, cmd.sku, cmd.qty))
    return cmd.orderid


def on_allocated(event: Allocated) -> None:
    hit()


# S4: the event is raised by an aggregate loaded through the unit of work.
def allocate_in_uow(cmd: Allocate, uow: AbstractUnitOfWork) -> str:
    product = uow.products.get(cmd.sku)  # type: ignore[attr-defined]
    product.allocate(cmd.orderid, cmd.qty)
    return cmd.orderid


# The async twins.
async def allocate_async(cmd: Allocate) -> str:
    return cmd.orderid


async def on_placed_1_async(event: OrderPlaced) -> None:
    hit()


async def on_placed_2_async(event: OrderPlaced) -> None:
    hit()


async def on_placed_3_async(event: OrderPlaced) -> None:
    hit()


async def allocate_and_emit_async(cmd: Allocate, context: Context) -> str:
    context.emit(Allocated(cmd.orderid, cmd.sku, cmd.qty))
    return cmd.orderid


async def on_allocated_async(event: Allocated) -> None:
    hit()


async def allocate_in_uow_async(cmd: Allocate, uow: Any) -> str:
    product = uow.products.get(cmd.sku)
    if hasattr(product, "__await__"):  # FakeAsyncUnitOfWork's repositories may be async
        product = await product
    product.allocate(cmd.orderid, cmd.qty)
    return cmd.orderid
