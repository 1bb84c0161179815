"""The allocation example's handlers, through the bus, over the fake unit of work."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs
from structlog.typing import EventDict

from allocation.bootstrap import Service
from allocation.domain import commands, events
from allocation.domain.model import Product
from allocation.service_layer.handlers import InvalidSku
from messagebus.testing import FakeUnitOfWork, InMemoryRepository

from .fakes import FakeNotifications, FakePublisher, InMemoryAllocationsView


def batch_refs(products: InMemoryRepository[Product], sku: str) -> list[str]:
    product = products.get(sku)
    assert product is not None
    return [batch.reference for batch in product.batches]


def test_create_batch_for_a_new_product_adds_the_product(
    service: Service, products: InMemoryRepository[Product], uows: list[FakeUnitOfWork]
) -> None:
    service.bus.handle(commands.CreateBatch("b1", "CRUNCHY-ARMCHAIR", 100))

    assert ["b1"] == batch_refs(products, "CRUNCHY-ARMCHAIR")
    assert [1] == [uow.committed for uow in uows]


def test_create_batch_for_an_existing_product_adds_a_batch(
    service: Service, products: InMemoryRepository[Product]
) -> None:
    service.bus.handle(commands.CreateBatch("b1", "GARISH-RUG", 100))
    service.bus.handle(commands.CreateBatch("b2", "GARISH-RUG", 99, datetime.date(2031, 1, 1)))

    assert ["b1", "b2"] == batch_refs(products, "GARISH-RUG")


def test_allocate_returns_the_batch_and_commits(
    service: Service, uows: list[FakeUnitOfWork]
) -> None:
    service.bus.handle(commands.CreateBatch("batch1", "COMPLICATED-LAMP", 100))

    result = service.bus.handle(commands.Allocate("o1", "COMPLICATED-LAMP", 10))

    assert "batch1" == result
    # One unit of work each for CreateBatch and Allocate; Allocated's handlers use none.
    assert [(1, 0, True), (1, 0, True)] == [
        (uow.committed, uow.rolled_back, uow.closed) for uow in uows
    ]


def test_allocate_is_an_error_for_an_unknown_sku(
    service: Service, uows: list[FakeUnitOfWork]
) -> None:
    service.bus.handle(commands.CreateBatch("b1", "AREALSKU", 100))

    with pytest.raises(InvalidSku, match="Invalid sku NONEXISTENTSKU"):
        service.bus.handle(commands.Allocate("o1", "NONEXISTENTSKU", 10))
    assert (0, 1) == (uows[-1].committed, uows[-1].rolled_back)


@pytest.fixture
def logs() -> Iterator[list[EventDict]]:
    """The structlog events of the test; asked for before ``service``, whose bus logs here."""
    with capture_logs() as entries:
        yield entries


def test_an_unknown_sku_is_an_expected_outcome_logged_at_info_without_a_traceback(
    logs: list[EventDict], service: Service
) -> None:
    with pytest.raises(InvalidSku):
        service.bus.handle(commands.Allocate("o1", "NONEXISTENTSKU", 10))

    assert [("message_rejected", "info", "InvalidSku: Invalid sku NONEXISTENTSKU")] == [
        (line["event"], line["log_level"], line["error"]) for line in logs
    ]
    assert "exc_info" not in logs[0]


def test_allocated_is_published_and_reaches_the_read_model(
    service: Service, publisher: FakePublisher, views: InMemoryAllocationsView
) -> None:
    service.bus.handle(commands.CreateBatch("b1", "POPULAR-CURTAINS", 100))

    service.bus.handle(commands.Allocate("o1", "POPULAR-CURTAINS", 10))

    allocated = events.Allocated("o1", "POPULAR-CURTAINS", 10, "b1")
    assert [("line_allocated", allocated)] == publisher.published
    assert [{"sku": "POPULAR-CURTAINS", "batchref": "b1"}] == service.views.for_order("o1")


def test_out_of_stock_sends_an_email(
    service: Service, notifications: FakeNotifications, views: InMemoryAllocationsView
) -> None:
    service.bus.handle(commands.CreateBatch("b1", "POPULAR-CURTAINS", 9))

    assert service.bus.handle(commands.Allocate("o1", "POPULAR-CURTAINS", 10)) is None

    assert {"stock@made.com": ["Out of stock for POPULAR-CURTAINS"]} == notifications.sent
    assert [] == views.for_order("o1")


def test_change_batch_quantity_changes_the_available_quantity(
    service: Service, products: InMemoryRepository[Product]
) -> None:
    service.bus.handle(commands.CreateBatch("batch1", "ADORABLE-SETTEE", 100))

    service.bus.handle(commands.ChangeBatchQuantity("batch1", "ADORABLE-SETTEE", 50))

    product = products.get("ADORABLE-SETTEE")
    assert product is not None
    assert 50 == product.batches[0].available_quantity


def test_shrinking_a_batch_reallocates_its_lines_and_updates_the_read_model(
    service: Service, products: InMemoryRepository[Product], views: InMemoryAllocationsView
) -> None:
    bus = service.bus
    bus.handle(commands.CreateBatch("batch1", "INDIFFERENT-TABLE", 50))
    bus.handle(commands.CreateBatch("batch2", "INDIFFERENT-TABLE", 50, datetime.date.today()))
    bus.handle(commands.Allocate("order1", "INDIFFERENT-TABLE", 20))
    bus.handle(commands.Allocate("order2", "INDIFFERENT-TABLE", 20))

    bus.handle(commands.ChangeBatchQuantity("batch1", "INDIFFERENT-TABLE", 25))

    product = products.get("INDIFFERENT-TABLE")
    assert product is not None
    assert [5, 30] == [b.available_quantity for b in product.batches]
    where = {
        orderid: [row["batchref"] for row in views.for_order(orderid)]
        for orderid in ("order1", "order2")
    }
    assert sorted(where.values()) == [["batch1"], ["batch2"]]


def test_change_batch_quantity_is_an_error_for_an_unknown_sku(service: Service) -> None:
    with pytest.raises(InvalidSku):
        service.bus.handle(commands.ChangeBatchQuantity("b1", "NOPE", 1))
