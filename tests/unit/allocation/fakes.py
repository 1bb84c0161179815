"""Fakes of the allocation example's adapters, for its unit tests."""

from __future__ import annotations

from messagebus import Event


class FakeNotifications:
    """Remembers what it was asked to send, by destination."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = {}

    def send(self, destination: str, message: str) -> None:
        self.sent.setdefault(destination, []).append(message)


class FakePublisher:
    """Remembers what was published, as (channel, event)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Event]] = []

    def __call__(self, channel: str, event: Event) -> None:
        self.published.append((channel, event))


class InMemoryAllocationsView:
    """The read model in a dict."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], str] = {}

    def add(self, orderid: str, sku: str, batchref: str) -> None:
        self.rows[orderid, sku] = batchref

    def remove(self, orderid: str, sku: str) -> None:
        del self.rows[orderid, sku]

    def for_order(self, orderid: str) -> list[dict[str, str]]:
        return [
            {"sku": sku, "batchref": batchref}
            for (order, sku), batchref in sorted(self.rows.items())
            if order == orderid
        ]
