"""Handlers for the async entry point: the use cases of ``handlers.py``, awaited.

``AsyncMessageBus`` runs ``async def`` handlers only (a plain function would
block the event loop, or leave its unit of work's transaction if it ran in a
thread), so these are a registry of their own. What they share with the sync
handlers is what holds the logic: the domain model, the commands and events,
and the errors (:class:`~allocation.service_layer.handlers.InvalidSku`).
They differ only where they reach out:

- the repository reads the database, so ``get`` is awaited (the unit of work
  is ``AsyncSqlAlchemyUnitOfWork``, which loads a product whole);
- the read model is kept through an async engine (``AsyncAllocationsView``);
- the notifications and publishing adapters are blocking (a file, a client
  with no async API): they run in a thread, ``await asyncio.to_thread(...)``,
  which is safe for handlers without a unit of work.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from allocation.adapters.notifications import Notifications
from allocation.adapters.publisher import Publish
from allocation.domain import commands, events, model
from allocation.service_layer.handlers import InvalidSku
from allocation.views import AsyncAllocationsView
from messagebus import Registry

registry = Registry()


class Products(Protocol):
    """The repository of products, as async handlers use it."""

    def add(self, product: model.Product) -> None: ...

    async def get(self, sku: str) -> model.Product | None: ...


class UnitOfWork(Protocol):
    """A unit of work with a ``products`` repository: AsyncSqlAlchemyUnitOfWork."""

    @property
    def products(self) -> Products: ...


@registry.register
async def add_batch(cmd: commands.CreateBatch, uow: UnitOfWork) -> None:
    product = await uow.products.get(cmd.sku)
    if product is None:
        product = model.Product(cmd.sku, batches=[])
        uow.products.add(product)
    product.batches.append(model.Batch(cmd.ref, cmd.sku, cmd.qty, cmd.eta))


@registry.register(raises=[events.Allocated, events.OutOfStock])
async def allocate(cmd: commands.Allocate, uow: UnitOfWork) -> str | None:
    line = model.OrderLine(cmd.orderid, cmd.sku, cmd.qty)
    product = await uow.products.get(line.sku)
    if product is None:
        raise InvalidSku(line.sku)
    return product.allocate(line)


@registry.register(raises=[events.Deallocated])
async def change_batch_quantity(cmd: commands.ChangeBatchQuantity, uow: UnitOfWork) -> None:
    product = await uow.products.get(cmd.sku)
    if product is None:
        raise InvalidSku(cmd.sku)
    product.change_batch_quantity(cmd.ref, cmd.qty)


@registry.register(uow=False)
async def send_out_of_stock_notification(
    event: events.OutOfStock, notifications: Notifications
) -> None:
    await asyncio.to_thread(notifications.send, "stock@made.com", f"Out of stock for {event.sku}")


@registry.register(uow=False)
async def publish_allocated_event(event: events.Allocated, publish: Publish) -> None:
    await asyncio.to_thread(publish, "line_allocated", event)


@registry.register(uow=False)
async def add_allocation_to_read_model(
    event: events.Allocated, views: AsyncAllocationsView
) -> None:
    await views.add(event.orderid, event.sku, event.batchref)


@registry.register(uow=False)
async def remove_allocation_from_read_model(
    event: events.Deallocated, views: AsyncAllocationsView
) -> None:
    await views.remove(event.orderid, event.sku)


@registry.register(raises=[events.Allocated, events.OutOfStock])
async def reallocate(event: events.Deallocated, uow: UnitOfWork) -> None:
    await allocate(commands.Allocate(event.orderid, event.sku, event.qty), uow)
