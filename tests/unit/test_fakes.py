"""The fakes of messagebus.testing: an in-memory repository and a fake unit of work."""

import asyncio
import inspect

import attrs
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from structlog.typing import EventDict

from messagebus import Command, ConcurrencyError, Event, MessageBus, Registry, Transient
from messagebus.sqlalchemy import (
    AsyncSqlAlchemyRepository,
    AsyncSqlAlchemyUnitOfWork,
    SqlAlchemyRepository,
    SqlAlchemyUnitOfWork,
)
from messagebus.testing import (
    FakeAsyncUnitOfWork,
    FakeUnitOfWork,
    InMemoryRepository,
    RepositoryView,
)


@attrs.frozen
class Reserve(Command[int]):
    sku: str
    qty: int


@attrs.frozen
class Reserved(Event):
    sku: str
    qty: int


@attrs.define
class Product:
    sku: str
    available: int
    events: list[Event] = attrs.field(factory=list)


def products(*items: Product) -> InMemoryRepository[Product]:
    return InMemoryRepository(key=lambda product: product.sku, items=items)


# -- InMemoryRepository ---------------------------------------------------------------


def test_repository_stores_a_copy_of_what_is_added() -> None:
    repository = products()
    lamp = Product("lamp", 10)

    repository.add(lamp)
    lamp.available = 0

    assert Product("lamp", 10) == repository.get("lamp")


def test_repository_gives_a_copy_of_what_it_holds() -> None:
    repository = products(Product("lamp", 10))

    repository.get("lamp").available = 0  # type: ignore[union-attr]

    assert Product("lamp", 10) == repository.get("lamp")


def test_repository_gives_none_for_an_unknown_key() -> None:
    assert None is products(Product("lamp", 10)).get("chair")


def test_repository_lists_copies_of_every_aggregate() -> None:
    repository = products(Product("lamp", 10), Product("chair", 5))

    listed = repository.list()
    listed[0].available = 0

    assert [Product("lamp", 10), Product("chair", 5)] == repository.list()
    assert (["lamp", "chair"], 2) == (repository.keys(), len(repository))


def test_repository_does_not_store_pending_events() -> None:
    repository = products(Product("lamp", 10, events=[Reserved("lamp", 1)]))

    assert [] == repository.get("lamp").events  # type: ignore[union-attr]


# -- FakeUnitOfWork -------------------------------------------------------------------


def test_changes_reach_the_repository_only_on_commit() -> None:
    repository = products(Product("lamp", 10))
    uow = FakeUnitOfWork(products=repository)

    uow.products.get("lamp").available = 7
    uow.products.add(Product("chair", 5))
    before = repository.list()
    uow.commit()

    assert [Product("lamp", 10)] == before
    assert [Product("lamp", 7), Product("chair", 5)] == repository.list()
    assert 1 == uow.committed


def test_rollback_discards_changes_and_their_events() -> None:
    repository = products(Product("lamp", 10))
    uow = FakeUnitOfWork(products=repository)
    lamp = uow.products.get("lamp")
    lamp.available = 7
    lamp.events.append(Reserved("lamp", 3))

    uow.rollback()
    uow.commit()

    assert [] == lamp.events
    assert [Product("lamp", 10)] == repository.list()
    assert (1, 1) == (uow.rolled_back, uow.committed)
    assert Product("lamp", 10) == uow.products.get("lamp")


def test_an_aggregate_read_twice_in_a_unit_of_work_is_one_tracked_object() -> None:
    uow = FakeUnitOfWork(products=products(Product("lamp", 10)))

    lamp = uow.products.get("lamp")

    assert lamp is uow.products.get("lamp")
    assert (lamp,) == uow.seen


def test_unit_of_work_lists_what_it_added_with_what_was_committed() -> None:
    uow = FakeUnitOfWork(products=products(Product("lamp", 10)))
    uow.products.add(Product("chair", 5))

    assert [Product("lamp", 10), Product("chair", 5)] == uow.products.list()


def test_commit_collects_the_new_events_of_the_aggregates_read() -> None:
    uow = FakeUnitOfWork(products=products(Product("lamp", 10)))
    uow.products.get("lamp").events.append(Reserved("lamp", 3))

    uow.commit()

    assert [Reserved("lamp", 3)] == uow.collect_new_events()


def test_concurrent_commit_of_the_same_aggregate_raises_a_transient_concurrency_error() -> None:
    repository = products(Product("lamp", 10))
    first, second = FakeUnitOfWork(products=repository), FakeUnitOfWork(products=repository)
    first.products.get("lamp").available = 9
    second.products.get("lamp").available = 8
    second.commit()

    with pytest.raises(ConcurrencyError, match="lamp") as caught:
        first.commit()

    assert isinstance(caught.value, Transient)
    assert Product("lamp", 8) == repository.get("lamp")


def test_concurrent_add_of_the_same_key_raises_a_concurrency_error() -> None:
    repository = products()
    first, second = FakeUnitOfWork(products=repository), FakeUnitOfWork(products=repository)
    first.products.add(Product("lamp", 1))
    second.products.add(Product("lamp", 2))
    second.commit()

    with pytest.raises(ConcurrencyError):
        first.commit()

    assert Product("lamp", 2) == repository.get("lamp")


def test_a_commit_that_conflicts_writes_nothing() -> None:
    repository = products(Product("lamp", 10), Product("chair", 5))
    first, second = FakeUnitOfWork(products=repository), FakeUnitOfWork(products=repository)
    first.products.get("chair").available = 4
    first.products.get("lamp").available = 9
    second.products.get("lamp").available = 8
    second.commit()

    with pytest.raises(ConcurrencyError):
        first.commit()

    assert [Product("lamp", 8), Product("chair", 5)] == repository.list()


def test_unit_of_work_can_commit_again_after_a_commit() -> None:
    repository = products(Product("lamp", 10))
    uow = FakeUnitOfWork(products=repository)
    lamp = uow.products.get("lamp")
    lamp.available = 9
    uow.commit()
    lamp.available = 8
    uow.commit()

    assert Product("lamp", 8) == repository.get("lamp")


def test_concurrency_error_on_commit_is_retried_by_the_bus(
    waits: list[float], logs: list[EventDict]
) -> None:
    repository = products(Product("lamp", 10))
    registry = Registry()
    reserved: list[Event] = []

    @registry.register
    def reserve(cmd: Reserve, uow: FakeUnitOfWork) -> int:
        lamp = uow.products.get(cmd.sku)
        if not reserved and not waits:  # someone else takes one lamp meanwhile
            other = FakeUnitOfWork(products=repository)
            other.products.get(cmd.sku).available -= 1
            other.commit()
        lamp.available -= cmd.qty
        lamp.events.append(Reserved(cmd.sku, cmd.qty))
        return lamp.available

    @registry.register(uow=False)
    def record(event: Reserved) -> None:
        reserved.append(event)

    bus = MessageBus(registry, uow=lambda: FakeUnitOfWork(products=repository), sleep=waits.append)
    result = bus.handle(Reserve("lamp", 3))

    assert (6, 1) == (result, len(waits))
    assert Product("lamp", 6) == repository.get("lamp")
    assert [Reserved("lamp", 3)] == reserved


def test_unknown_repository_is_an_attribute_error_naming_the_known_ones() -> None:
    uow = FakeUnitOfWork(products=products(), orders=products())

    with pytest.raises(AttributeError) as caught:
        _ = uow.batches

    assert "'batches'" in str(caught.value)
    assert "products, orders" in str(caught.value)


def test_close_marks_the_unit_of_work_closed() -> None:
    uow = FakeUnitOfWork(products=products())

    before = uow.closed
    uow.close()

    assert (False, True) == (before, uow.closed)


def test_bus_closes_the_fake_unit_of_work_after_the_attempt() -> None:
    registry = Registry()
    made: list[FakeUnitOfWork] = []

    @registry.register
    def reserve(cmd: Reserve, uow: FakeUnitOfWork) -> int:
        return cmd.qty

    def new_uow() -> FakeUnitOfWork:
        made.append(FakeUnitOfWork(products=products()))
        return made[-1]

    MessageBus(registry, uow=new_uow).handle(Reserve("lamp", 1))

    assert [(1, 0, True)] == [(uow.committed, uow.rolled_back, uow.closed) for uow in made]


def test_a_repository_view_subclass_adds_the_applications_own_queries() -> None:
    class Products(RepositoryView[Product]):
        def with_stock_over(self, quantity: int) -> list[Product]:
            return [p for p in self.list() if p.available > quantity]

    table = InMemoryRepository(key=lambda p: p.sku, view=Products)
    table.add(Product("lamp", 5))
    table.add(Product("sofa", 50))

    uow = FakeUnitOfWork(products=table)

    assert ["sofa"] == [p.sku for p in uow.products.with_stock_over(10)]


def test_the_async_fakes_repositories_are_awaited_like_the_sqlalchemy_ones() -> None:
    class Products(RepositoryView[Product]):
        def named(self, sku: str) -> Product | None:
            return self.get(sku)

    table = InMemoryRepository(key=lambda p: p.sku, view=Products)
    table.add(Product("lamp", 5))

    async def scenario() -> list[object]:
        uow = FakeAsyncUnitOfWork(products=table)
        uow.products.add(Product("sofa", 1))
        found = [await uow.products.get("lamp"), await uow.products.named("sofa")]
        await uow.commit()
        return [p.sku for p in found] + [p.sku for p in await uow.products.list()]

    assert ["lamp", "sofa", "lamp", "sofa"] == asyncio.run(scenario())
    assert ["lamp", "sofa"] == sorted(table.keys())


# -- the same interface as the SQLAlchemy units of work (DESIGN.md §4) ------------------


class Base(DeclarativeBase):
    pass


class ProductRow(Base):
    __tablename__ = "products"

    sku: Mapped[str] = mapped_column(primary_key=True)
    available: Mapped[int]


#: What the bus and handlers use of a unit of work (beside its repositories, reached
#: as attributes): the bus commits, rolls back, closes and collects the new events;
#: repositories (an application's own, too) track what they hand out.
UNIT_OF_WORK = {"commit", "rollback", "close", "collect_new_events", "seen", "track"}
#: What the bus uses of a unit of work for a message delivered by a consumer.
UNIT_OF_WORK |= {"claim_incoming"}
#: What the bus uses of a unit of work for messages that leave the process (the outbox).
UNIT_OF_WORK |= {"stage_outgoing"}
#: What a test checks of the fake only.
FAKE_ONLY = {"committed", "rolled_back", "closed", "outgoing"}
#: The session, for queries that no repository offers: a real database only.
SQLALCHEMY_ONLY = {"session"}
#: What a handler uses of a repository.
REPOSITORY = {"add", "get", "list"}
#: The SQLAlchemy repository's helpers for an application's own queries (a fake's own
#: queries come from a RepositoryView subclass instead) and its declaration.
SQLALCHEMY_REPOSITORY_ONLY = {"all", "first", "bind", "key", "model", "session"}


def public(obj: object) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def shape(obj: object, names: set[str]) -> dict[str, object]:
    """Each name's parameters and whether it is awaited; "attribute" if not callable."""
    found: dict[str, object] = {}
    for name in sorted(names):
        value = getattr(obj, name)
        if callable(value):
            parameters = list(inspect.signature(value).parameters)
            found[name] = (parameters, inspect.iscoroutinefunction(value))
        else:
            found[name] = "attribute"
    return found


def test_the_fake_unit_of_work_has_the_interface_of_the_sqlalchemy_one() -> None:
    fake = FakeUnitOfWork(products=products())
    real = SqlAlchemyUnitOfWork(
        sessionmaker(sa.create_engine("sqlite://")),
        products=SqlAlchemyRepository(ProductRow, key="sku"),
    )
    try:
        assert UNIT_OF_WORK | FAKE_ONLY == public(fake)
        assert UNIT_OF_WORK | SQLALCHEMY_ONLY == public(real)
        assert shape(real, UNIT_OF_WORK) == shape(fake, UNIT_OF_WORK)
        assert [True, True] == [callable(getattr(u, "__enter__", None)) for u in (fake, real)]

        assert REPOSITORY == public(fake.products)
        assert REPOSITORY | SQLALCHEMY_REPOSITORY_ONLY == public(real.products)
        assert shape(real.products, REPOSITORY) == shape(fake.products, REPOSITORY)
    finally:
        real.close()


def test_the_async_fake_unit_of_work_has_the_interface_of_the_sqlalchemy_one() -> None:
    fake = FakeAsyncUnitOfWork(products=products())
    real = AsyncSqlAlchemyUnitOfWork(
        async_sessionmaker(create_async_engine("sqlite+aiosqlite://")),
        products=AsyncSqlAlchemyRepository(ProductRow, key="sku"),
    )
    try:
        assert UNIT_OF_WORK | FAKE_ONLY == public(fake)
        assert UNIT_OF_WORK | SQLALCHEMY_ONLY == public(real)
        assert shape(real, UNIT_OF_WORK) == shape(fake, UNIT_OF_WORK)
        assert [True, True] == [callable(getattr(u, "__aenter__", None)) for u in (fake, real)]

        assert REPOSITORY == public(fake.products)
        assert REPOSITORY | SQLALCHEMY_REPOSITORY_ONLY | {"options"} == public(real.products)
        assert shape(real.products, REPOSITORY) == shape(fake.products, REPOSITORY)
    finally:
        asyncio.run(real.close())

    # Awaited alike: what touches the database, not what only tracks or collects.
    awaited = {"commit", "rollback", "close", "get", "list", "claim_incoming"}
    assert awaited == {
        name
        for obj, names in ((fake, UNIT_OF_WORK), (fake.products, REPOSITORY))
        for name in names
        if inspect.iscoroutinefunction(getattr(obj, name))
    }


def test_units_of_work_show_their_repositories_and_what_happened_to_them() -> None:
    fake = FakeUnitOfWork(products=products(), orders=InMemoryRepository(key=lambda o: o))
    fake.track(object())
    fake.commit()
    fake.close()
    real = SqlAlchemyUnitOfWork(
        sessionmaker(sa.create_engine("sqlite://")),
        products=SqlAlchemyRepository(ProductRow, key="sku"),
    )
    real.close()
    async_real = AsyncSqlAlchemyUnitOfWork(
        async_sessionmaker(create_async_engine("sqlite+aiosqlite://")),
        products=AsyncSqlAlchemyRepository(ProductRow, key="sku"),
    )
    asyncio.run(async_real.close())

    assert (
        "<FakeUnitOfWork repositories=['orders', 'products'] seen=1 committed=1 "
        "rolled_back=0 closed=True>"
    ) == repr(fake)
    assert (
        "<FakeAsyncUnitOfWork repositories=[] seen=0 committed=0 rolled_back=0 closed=False>"
    ) == repr(FakeAsyncUnitOfWork())
    assert "<SqlAlchemyUnitOfWork repositories=['products'] seen=0>" == repr(real)
    assert "<AsyncSqlAlchemyUnitOfWork repositories=['products'] seen=0>" == repr(async_real)


def test_an_in_memory_repository_shows_how_many_aggregates_it_holds() -> None:
    assert "<InMemoryRepository aggregates=0 view=RepositoryView>" == repr(
        InMemoryRepository(key=lambda p: p)
    )
    assert "<InMemoryRepository aggregates=2 view=RepositoryView>" == repr(
        InMemoryRepository(key=lambda p: p, items=["a", "b"])
    )
