"""Fakes for the allocation example's unit tests: the bus runs as in production,
over messagebus.testing's fake unit of work and fake adapters."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from allocation import bootstrap
from allocation.domain import model
from messagebus.testing import FakeUnitOfWork, InMemoryRepository

from .fakes import FakeNotifications, FakePublisher, InMemoryAllocationsView


@pytest.fixture
def products() -> InMemoryRepository[model.Product]:
    """The "database" of products that every fake unit of work shares."""
    return InMemoryRepository(key=lambda product: product.sku)


@pytest.fixture
def notifications() -> FakeNotifications:
    return FakeNotifications()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def views() -> InMemoryAllocationsView:
    return InMemoryAllocationsView()


@pytest.fixture
def uows(products: InMemoryRepository[model.Product]) -> list[FakeUnitOfWork]:
    """Every unit of work the bus opened, in order."""
    return []


@pytest.fixture
def service(
    products: InMemoryRepository[model.Product],
    uows: list[FakeUnitOfWork],
    notifications: FakeNotifications,
    publisher: FakePublisher,
    views: InMemoryAllocationsView,
) -> bootstrap.Service:
    def uow() -> FakeUnitOfWork:
        uows.append(FakeUnitOfWork(products=products))
        return uows[-1]

    no_sleep: Callable[[float], None] = lambda _: None  # noqa: E731
    return bootstrap.bootstrap(
        uow=uow, views=views, notifications=notifications, publish=publisher, sleep=no_sleep
    )
