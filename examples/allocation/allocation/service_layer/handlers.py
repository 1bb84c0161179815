"""Handlers: what the service does for each command and event.

Handlers are plain functions. The bus gives each its own unit of work per
attempt (``uow``) and commits it; the other parameters are dependencies given
to :func:`allocation.bootstrap.bootstrap`, injected by name.
"""

from __future__ import annotations

from typing import Protocol

from allocation.adapters.notifications import Notifications
from allocation.adapters.publisher import Publish
from allocation.domain import commands, events, model
from allocation.views import AllocationsView
from messagebus import Expected, Registry

registry = Registry()


class InvalidSku(Expected):
    """A command names a sku the service has no product for.

    An expected outcome (answered with 400), not a failure: the bus logs it at
    INFO without a traceback, and does not retry it.
    """

    def __init__(self, sku: str) -> None:
        self.sku = sku
        super().__init__(f"Invalid sku {sku}")


class Products(Protocol):
    """The repository of products, as handlers use it."""

    def add(self, product: model.Product) -> None: ...

    def get(self, sku: str) -> model.Product | None: ...


class UnitOfWork(Protocol):
    """A unit of work with a ``products`` repository: SqlAlchemyUnitOfWork in
    production, messagebus.testing.FakeUnitOfWork in the unit tests."""

    @property
    def products(self) -> Products: ...


@registry.register
def add_batch(cmd: commands.CreateBatch, uow: UnitOfWork) -> None:
    product = uow.products.get(cmd.sku)
    if product is None:
        product = model.Product(cmd.sku, batches=[])
        uow.products.add(product)
    product.batches.append(model.Batch(cmd.ref, cmd.sku, cmd.qty, cmd.eta))


@registry.register(raises=[events.Allocated, events.OutOfStock])
def allocate(cmd: commands.Allocate, uow: UnitOfWork) -> str | None:
    line = model.OrderLine(cmd.orderid, cmd.sku, cmd.qty)
    product = uow.products.get(line.sku)
    if product is None:
        raise InvalidSku(line.sku)
    return product.allocate(line)


@registry.register(raises=[events.Deallocated])
def change_batch_quantity(cmd: commands.ChangeBatchQuantity, uow: UnitOfWork) -> None:
    product = uow.products.get(cmd.sku)
    if product is None:
        raise InvalidSku(cmd.sku)
    product.change_batch_quantity(cmd.ref, cmd.qty)


@registry.register(uow=False)
def send_out_of_stock_notification(event: events.OutOfStock, notifications: Notifications) -> None:
    notifications.send("stock@made.com", f"Out of stock for {event.sku}")


@registry.register(uow=False)
def publish_allocated_event(event: events.Allocated, publish: Publish) -> None:
    publish("line_allocated", event)


@registry.register(uow=False)
def add_allocation_to_read_model(event: events.Allocated, views: AllocationsView) -> None:
    views.add(event.orderid, event.sku, event.batchref)


@registry.register(uow=False)
def remove_allocation_from_read_model(event: events.Deallocated, views: AllocationsView) -> None:
    views.remove(event.orderid, event.sku)


@registry.register(raises=[events.Allocated, events.OutOfStock])
def reallocate(event: events.Deallocated, uow: UnitOfWork) -> None:
    allocate(commands.Allocate(event.orderid, event.sku, event.qty), uow)
