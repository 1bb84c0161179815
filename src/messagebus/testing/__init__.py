"""What users test their handlers with: fakes, a recorder, and given / when / then.

The bus runs in tests as in production, with a unit of work and repositories
kept in memory in place of the database::

    products = InMemoryRepository(key=lambda product: product.sku)
    bus = bootstrap(uow=lambda: FakeUnitOfWork(products=products))
    bus.handle(CreateBatch("b1", "LAMP", 100))
    assert products.get("LAMP").batches[0].reference == "b1"

A :class:`Recorder`, given to the bus as a listener, records what it handled,
raised, retried and gave up on; a :class:`Scenario` (or :class:`AsyncScenario`)
tells a test as given / when / then::

    recorder = Recorder()
    bus = bootstrap(uow=..., listeners=[recorder])
    Scenario(bus).given(CreateBatch("b1", "LAMP", 10)).when(
        Allocate("o1", "LAMP", 2)
    ).then_raised(Allocated("o1", "LAMP", 2, "b1"))

The pytest plugin (:mod:`messagebus.testing.plugin`, registered when
messagebus is installed) builds the application's own bus with fakes as fixtures.
"""

from ._clock import FakeClock
from ._fakes import (
    AsyncRepositoryView,
    FakeAsyncUnitOfWork,
    FakeUnitOfWork,
    InMemoryInbox,
    InMemoryRepository,
    RepositoryView,
)
from ._recorder import Dispatch, Recorder
from ._scenario import AsyncScenario, Scenario

__all__ = [
    "AsyncRepositoryView",
    "AsyncScenario",
    "Dispatch",
    "FakeAsyncUnitOfWork",
    "FakeClock",
    "FakeUnitOfWork",
    "InMemoryInbox",
    "InMemoryRepository",
    "Recorder",
    "RepositoryView",
    "Scenario",
]
