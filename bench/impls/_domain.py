"""The aggregate of S4, shared by every implementation (standard library only)."""

from __future__ import annotations

from typing import Any

#: The scenarios' message values: an order line, as in the allocation example.
ORDERID, SKU, QTY = "order-1", "LAMP", 3


def product_class(event_type: Any) -> type:
    """An aggregate whose change raises ``event_type(orderid=..., sku=..., qty=...)``.

    Plain Python, so that every implementation's unit of work copies the same thing.
    """

    class Product:
        def __init__(self, sku: str) -> None:
            self.sku = sku
            self.allocated = 0
            self.events: list[Any] = []

        def allocate(self, orderid: str, qty: int) -> None:
            self.allocated += qty
            self.events.append(event_type(orderid=orderid, sku=self.sku, qty=qty))

    return Product
