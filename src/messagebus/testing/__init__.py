"""Fakes for testing handlers: a unit of work and repositories kept in memory.

Users test their handlers through a real bus with these in place of the
database::

    products = InMemoryRepository(key=lambda product: product.sku)
    bus = bootstrap(uow=lambda: FakeUnitOfWork(products=products))
    bus.handle(CreateBatch("b1", "LAMP", 100))
    assert products.get("LAMP").batches[0].reference == "b1"
"""

from ._fakes import FakeAsyncUnitOfWork, FakeUnitOfWork, InMemoryRepository, RepositoryView

__all__ = [
    "FakeAsyncUnitOfWork",
    "FakeUnitOfWork",
    "InMemoryRepository",
    "RepositoryView",
]
