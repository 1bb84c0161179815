"""The allocation example on a real database (SQLite and PostgreSQL): its mapping,
its unit of work, its read model, and its handlers through the bus."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.orm import sessionmaker

from allocation.adapters import orm
from allocation.bootstrap import Service, bootstrap
from allocation.domain import commands, events, model
from allocation.service_layer.handlers import InvalidSku
from allocation.views import SqlAlchemyAllocationsView, allocations
from messagebus import Event
from messagebus.sqlalchemy import SqlAlchemyRepository, SqlAlchemyUnitOfWork
from tests.conftest import EXAMPLE


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sqlalchemy.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'allocation.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_database")
    engine = orm.make_engine(url)
    orm.create_schema(engine)
    orm.start_mappers()
    yield engine
    engine.dispose()


def new_uow(engine: sqlalchemy.Engine) -> SqlAlchemyUnitOfWork:
    return SqlAlchemyUnitOfWork(
        sessionmaker(engine), products=SqlAlchemyRepository(model.Product, key="sku")
    )


@pytest.fixture
def service(engine: sqlalchemy.Engine) -> Service:
    published: list[tuple[str, Event]] = []
    return bootstrap(
        engine,
        notifications=RecordingNotifications(),
        publish=lambda channel, event: published.append((channel, event)),
        sleep=lambda _: None,
    )


class RecordingNotifications:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, destination: str, message: str) -> None:
        self.sent.append((destination, message))


def test_a_product_with_its_batches_and_allocations_round_trips(
    engine: sqlalchemy.Engine,
) -> None:
    eta = datetime.date(2031, 1, 2)
    with new_uow(engine) as uow:
        product = model.Product("LAMP", batches=[model.Batch("b1", "LAMP", 10, eta)])
        product.allocate(model.OrderLine("o1", "LAMP", 3))
        uow.products.add(product)
        uow.commit()
        assert [events.Allocated("o1", "LAMP", 3, "b1")] == uow.collect_new_events()

    with new_uow(engine) as uow:
        loaded = uow.products.get("LAMP")
        assert loaded is not None
        assert [] == loaded.events  # made by the load listener, not __init__
        [batch] = loaded.batches
        assert ("b1", eta, 7) == (batch.reference, batch.eta, batch.available_quantity)
        assert batch.has(model.OrderLine("o1", "LAMP", 3))


def test_each_allocation_increments_the_product_version(engine: sqlalchemy.Engine) -> None:
    with new_uow(engine) as uow:
        uow.products.add(model.Product("LAMP", [model.Batch("b1", "LAMP", 10, None)]))
        uow.commit()
    for orderid in ("o1", "o2"):
        with new_uow(engine) as uow:
            product = uow.products.get("LAMP")
            assert product is not None
            product.allocate(model.OrderLine(orderid, "LAMP", 1))
            uow.commit()

    with engine.connect() as connection:
        assert 3 == connection.scalar(sqlalchemy.select(orm.products.c.version_number))


def test_the_read_model_keeps_allocations_by_order(engine: sqlalchemy.Engine) -> None:
    view = SqlAlchemyAllocationsView(engine)
    view.add("o1", "LAMP", "b1")
    view.add("o1", "CHAIR", "b2")
    view.add("o2", "LAMP", "b1")

    view.remove("o1", "LAMP")

    assert [{"sku": "CHAIR", "batchref": "b2"}] == allocations("o1", view)
    assert [] == allocations("o3", view)


def test_allocating_through_the_bus_updates_the_read_model(service: Service) -> None:
    service.bus.handle(commands.CreateBatch("b1", "LAMP", 10))
    service.bus.handle(commands.CreateBatch("b2", "LAMP", 10, datetime.date(2031, 1, 1)))

    assert "b1" == service.bus.handle(commands.Allocate("o1", "LAMP", 6))
    assert "b1" == service.bus.handle(commands.Allocate("o2", "LAMP", 4))

    assert [{"sku": "LAMP", "batchref": "b1"}] == service.views.for_order("o1")
    with pytest.raises(InvalidSku):
        service.bus.handle(commands.Allocate("o3", "NOPE", 1))


def test_shrinking_a_batch_reallocates_in_the_database_and_the_read_model(
    service: Service, engine: sqlalchemy.Engine
) -> None:
    bus = service.bus
    bus.handle(commands.CreateBatch("b1", "TABLE", 50))
    bus.handle(commands.CreateBatch("b2", "TABLE", 50, datetime.date(2031, 1, 1)))
    bus.handle(commands.Allocate("o1", "TABLE", 20))
    bus.handle(commands.Allocate("o2", "TABLE", 20))

    bus.handle(commands.ChangeBatchQuantity("b1", "TABLE", 25))

    with new_uow(engine) as uow:
        product = uow.products.get("TABLE")
        assert product is not None
        assert [5, 30] == [batch.available_quantity for batch in product.batches]
    where = sorted(
        row["batchref"] for orderid in ("o1", "o2") for row in service.views.for_order(orderid)
    )
    assert ["b1", "b2"] == where


def test_the_mappers_start_again_after_sqlalchemy_clears_them(tmp_path: Path) -> None:
    # The book's test fixtures call clear_mappers() after every test. It clears every
    # mapper of the process, so this runs in a process of its own.
    script = f"""
import sqlalchemy.orm
from allocation.adapters import orm
from allocation.bootstrap import bootstrap
from allocation.domain import commands

engine = orm.make_engine("sqlite:///{tmp_path / "again.sqlite3"}")
orm.create_schema(engine)
orm.start_mappers()
sqlalchemy.orm.clear_mappers()
orm.start_mappers()
orm.start_mappers()  # mapped already: nothing to do
service = bootstrap(engine, sleep=lambda _: None)
service.bus.handle(commands.CreateBatch("b1", "LAMP", 10))
print(service.bus.handle(commands.Allocate("o1", "LAMP", 2)))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(EXAMPLE)},
    )

    assert (0, "b1") == (done.returncode, done.stdout.splitlines()[-1]), done.stderr
