"""The model: a Product is the aggregate; its Batches hold allocated OrderLines.

Plain Python, unaware of any database: ``adapters/orm.py`` maps these classes
onto tables (imperative mapping), and the unit of work checks the version of a
Product as a whole, so the model keeps no version number of its own.
"""

from __future__ import annotations

import dataclasses
import datetime

from allocation.domain import events
from messagebus import Event


class UnknownBatch(LookupError):
    """A product has no batch with the reference given."""


@dataclasses.dataclass(unsafe_hash=True)
class OrderLine:
    """A value object: a quantity of a sku for an order."""

    orderid: str
    sku: str
    qty: int


class Batch:
    """Stock of one sku, in the warehouse (``eta`` None) or arriving on ``eta``."""

    def __init__(self, ref: str, sku: str, qty: int, eta: datetime.date | None) -> None:
        self.reference = ref
        self.sku = sku
        self.eta = eta
        self._purchased_quantity = qty
        self._allocations: set[OrderLine] = set()

    def __repr__(self) -> str:
        return f"<Batch {self.reference}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Batch):
            return NotImplemented
        return other.reference == self.reference

    def __hash__(self) -> int:
        return hash(self.reference)

    def __gt__(self, other: Batch) -> bool:
        if self.eta is None:
            return False
        if other.eta is None:
            return True
        return self.eta > other.eta

    def allocate(self, line: OrderLine) -> None:
        if self.can_allocate(line):
            self._allocations.add(line)

    def deallocate_one(self) -> OrderLine:
        return self._allocations.pop()

    def has(self, line: OrderLine) -> bool:
        return line in self._allocations

    @property
    def allocated_quantity(self) -> int:
        return sum(line.qty for line in self._allocations)

    @property
    def available_quantity(self) -> int:
        return self._purchased_quantity - self.allocated_quantity

    def can_allocate(self, line: OrderLine) -> bool:
        return self.sku == line.sku and self.available_quantity >= line.qty


class Product:
    """The aggregate: every change to stock of one sku goes through its product."""

    def __init__(self, sku: str, batches: list[Batch]) -> None:
        self.sku = sku
        self.batches = batches
        self.events: list[Event] = []

    def allocate(self, line: OrderLine) -> str | None:
        """Allocate a line to the batch that arrives first; None when out of stock.

        A line that is allocated already keeps its batch (and raises no event),
        so that allocating twice is harmless.
        """
        for batch in self.batches:
            if batch.has(line):
                return batch.reference
        try:
            batch = next(b for b in sorted(self.batches) if b.can_allocate(line))
        except StopIteration:
            self.events.append(events.OutOfStock(line.sku))
            return None
        batch.allocate(line)
        self.events.append(events.Allocated(line.orderid, line.sku, line.qty, batch.reference))
        return batch.reference

    def change_batch_quantity(self, ref: str, qty: int) -> None:
        """Change a batch's quantity; lines that no longer fit are deallocated."""
        batch = next((b for b in self.batches if b.reference == ref), None)
        if batch is None:
            raise UnknownBatch(f"Unknown batch {ref} for sku {self.sku}")
        batch._purchased_quantity = qty
        while batch.available_quantity < 0:
            line = batch.deallocate_one()
            self.events.append(events.Deallocated(line.orderid, line.sku, line.qty))
