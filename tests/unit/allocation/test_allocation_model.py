"""The allocation example's domain model: batches and the Product aggregate."""

from __future__ import annotations

import datetime

import pytest

from allocation.domain import events
from allocation.domain.model import Batch, OrderLine, Product, UnknownBatch

TODAY = datetime.date(2031, 1, 1)
TOMORROW = TODAY + datetime.timedelta(days=1)
LATER = TODAY + datetime.timedelta(days=10)


def batch_and_line(sku: str, batch_qty: int, line_qty: int) -> tuple[Batch, OrderLine]:
    return Batch("batch-001", sku, batch_qty, eta=TODAY), OrderLine("order-123", sku, line_qty)


def test_allocating_to_a_batch_reduces_the_available_quantity() -> None:
    batch, line = batch_and_line("SMALL-TABLE", 20, 2)

    batch.allocate(line)

    assert 18 == batch.available_quantity


@pytest.mark.parametrize(
    ("batch_qty", "line_qty", "expected"), [(20, 2, True), (2, 20, False), (2, 2, True)]
)
def test_a_batch_can_allocate_a_line_that_fits(
    batch_qty: int, line_qty: int, expected: bool
) -> None:
    batch, line = batch_and_line("ELEGANT-LAMP", batch_qty, line_qty)

    assert expected == batch.can_allocate(line)


def test_a_batch_cannot_allocate_another_sku() -> None:
    batch = Batch("batch-001", "UNCOMFORTABLE-CHAIR", 100, eta=None)

    assert not batch.can_allocate(OrderLine("order-123", "EXPENSIVE-TOASTER", 10))


def test_allocating_the_same_line_twice_to_a_batch_counts_once() -> None:
    batch, line = batch_and_line("ANGULAR-DESK", 20, 2)

    batch.allocate(line)
    batch.allocate(line)

    assert 18 == batch.available_quantity


def test_batches_are_equal_by_reference_and_sorted_by_eta() -> None:
    in_stock = Batch("in-stock", "LAMP", 1, eta=None)
    later = Batch("later", "LAMP", 1, eta=LATER)
    tomorrow = Batch("tomorrow", "LAMP", 1, eta=TOMORROW)

    assert [in_stock, tomorrow, later] == sorted([later, tomorrow, in_stock])
    assert Batch("later", "OTHER", 5, eta=None) == later
    assert len({later, Batch("later", "LAMP", 1, eta=None)}) == 1
    assert later != "later"
    assert "<Batch later>" == repr(later)


def test_a_product_prefers_batches_in_the_warehouse_to_shipments() -> None:
    in_stock = Batch("in-stock-batch", "RETRO-CLOCK", 100, eta=None)
    shipment = Batch("shipment-batch", "RETRO-CLOCK", 100, eta=TOMORROW)
    product = Product("RETRO-CLOCK", batches=[shipment, in_stock])

    assert "in-stock-batch" == product.allocate(OrderLine("oref", "RETRO-CLOCK", 10))
    assert (90, 100) == (in_stock.available_quantity, shipment.available_quantity)


def test_a_product_prefers_earlier_batches() -> None:
    earliest = Batch("speedy-batch", "MINIMALIST-SPOON", 100, eta=TODAY)
    medium = Batch("normal-batch", "MINIMALIST-SPOON", 100, eta=TOMORROW)
    latest = Batch("slow-batch", "MINIMALIST-SPOON", 100, eta=LATER)
    product = Product("MINIMALIST-SPOON", batches=[medium, earliest, latest])

    product.allocate(OrderLine("order1", "MINIMALIST-SPOON", 10))

    assert [90, 100, 100] == [b.available_quantity for b in (earliest, medium, latest)]


def test_allocating_raises_allocated() -> None:
    batch = Batch("batchref", "HIGHBROW-POSTER", 100, eta=None)
    product = Product("HIGHBROW-POSTER", batches=[batch])

    product.allocate(OrderLine("oref", "HIGHBROW-POSTER", 10))

    assert [events.Allocated("oref", "HIGHBROW-POSTER", 10, "batchref")] == product.events


def test_a_line_that_no_batch_can_take_raises_out_of_stock() -> None:
    product = Product("SMALL-FORK", batches=[Batch("batch1", "SMALL-FORK", 10, eta=TODAY)])
    product.allocate(OrderLine("order1", "SMALL-FORK", 10))

    assert product.allocate(OrderLine("order2", "SMALL-FORK", 1)) is None
    assert events.OutOfStock("SMALL-FORK") == product.events[-1]


def test_allocating_a_line_again_keeps_its_batch_and_raises_nothing() -> None:
    product = Product("LAMP", batches=[Batch("b1", "LAMP", 10, eta=None)])
    line = OrderLine("o1", "LAMP", 10)
    product.allocate(line)
    product.events.clear()

    assert "b1" == product.allocate(line)
    assert [] == product.events


def test_shrinking_a_batch_deallocates_the_lines_that_no_longer_fit() -> None:
    batch = Batch("b1", "LAMP", 10, eta=None)
    product = Product("LAMP", batches=[batch])
    product.allocate(OrderLine("o1", "LAMP", 6))
    product.events.clear()

    product.change_batch_quantity("b1", 5)

    assert [events.Deallocated("o1", "LAMP", 6)] == product.events
    assert 5 == batch.available_quantity


def test_changing_an_unknown_batch_is_an_error() -> None:
    product = Product("LAMP", batches=[])

    with pytest.raises(UnknownBatch, match="Unknown batch b9 for sku LAMP"):
        product.change_batch_quantity("b9", 5)
