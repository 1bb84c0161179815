"""Events: what happened in the domain."""

from __future__ import annotations

import attrs

from messagebus import Event


@attrs.frozen
class Allocated(Event, name="allocation.Allocated"):
    """An order line was allocated to a batch."""

    orderid: str
    sku: str
    qty: int
    batchref: str


@attrs.frozen
class Deallocated(Event, name="allocation.Deallocated"):
    """An order line lost its batch (which shrank) and needs another."""

    orderid: str
    sku: str
    qty: int


@attrs.frozen
class OutOfStock(Event, name="allocation.OutOfStock"):
    """No batch of the product could take an order line."""

    sku: str
