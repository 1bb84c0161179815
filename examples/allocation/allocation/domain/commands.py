"""Commands: what the outside world asks the allocation service to do."""

from __future__ import annotations

import datetime

import attrs

from messagebus import Command


@attrs.frozen
class CreateBatch(Command[None], name="allocation.CreateBatch"):
    """Record a batch of stock, arriving at ``eta`` (None: in the warehouse now)."""

    ref: str
    sku: str
    qty: int
    eta: datetime.date | None = None


@attrs.frozen
class Allocate(Command[str | None], name="allocation.Allocate"):
    """Allocate an order line to a batch; returns the batch's reference, or None
    when the product is out of stock."""

    orderid: str
    sku: str
    qty: int


@attrs.frozen
class ChangeBatchQuantity(Command[None], name="allocation.ChangeBatchQuantity"):
    """Change how much a batch holds (the book's ERP says so); deallocates and
    reallocates order lines when the batch shrinks below what it has allocated.

    Unlike the book's, it names the batch's sku, so that the product is found
    by its key in every repository (the in-memory one of the tests included).
    """

    ref: str
    sku: str
    qty: int
