"""messagebus.sqlalchemy: the unit of work and repositories, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy
from sqlalchemy import ForeignKey, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    reconstructor,
    relationship,
    sessionmaker,
)
from sqlalchemy.orm.exc import StaleDataError

import messagebus
from messagebus import Command, Event, MessageBus, Registry, RetryPolicy
from messagebus.sqlalchemy import SqlAlchemyRepository, SqlAlchemyUnitOfWork

# -- a small aggregate: an order (the root) and its lines ----------------------


class Base(DeclarativeBase):
    pass


@attrs.frozen
class LineAdded(Event):
    number: str
    sku: str


class Order(Base):
    __tablename__ = "uow_orders"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(unique=True)
    status: Mapped[str] = mapped_column(default="open")
    version: Mapped[int] = mapped_column(nullable=False)
    lines: Mapped[list[Line]] = relationship(cascade="all, delete-orphan", order_by="Line.id")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    def __init__(self, number: str) -> None:
        self.number = number
        self.lines = []
        self.events: list[Event] = []

    @reconstructor
    def _loaded(self) -> None:
        self.events = []

    def add_line(self, sku: str, qty: int) -> None:
        self.lines.append(Line(sku=sku, qty=qty))
        self.events.append(LineAdded(self.number, sku))


class Line(Base):
    __tablename__ = "uow_lines"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("uow_orders.id"))
    sku: Mapped[str]
    qty: Mapped[int]


class Note(Base):
    """Not versioned: changes are never checked."""

    __tablename__ = "uow_notes"

    key: Mapped[str] = mapped_column(primary_key=True)
    text: Mapped[str]


class ManualOrder(Base):
    """Versioned by the application itself (version_id_generator=False)."""

    __tablename__ = "uow_manual_orders"

    number: Mapped[str] = mapped_column(primary_key=True)
    qty: Mapped[int]
    version: Mapped[int] = mapped_column(nullable=False)

    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}  # noqa: RUF012


class OrderRepository(SqlAlchemyRepository[Order]):
    """A repository with a query of its own."""

    def with_sku(self, sku: str) -> list[Order]:
        return self.all(select(Order).join(Order.lines).where(Line.sku == sku).distinct())

    def first_with_sku(self, sku: str) -> Order | None:
        return self.first(select(Order).join(Order.lines).where(Line.sku == sku))


def orders() -> SqlAlchemyRepository[Order]:
    return SqlAlchemyRepository(Order, key="number")


class TypedUnitOfWork(SqlAlchemyUnitOfWork):
    """A unit of work whose repositories mypy knows."""

    orders: SqlAlchemyRepository[Order]
    notes: SqlAlchemyRepository[Note]
    manual: SqlAlchemyRepository[ManualOrder]


# -- the two databases ------------------------------------------------------------

SessionFactory = Callable[[], Session]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite3'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[sqlalchemy.Engine]:
    engine = sqlalchemy.create_engine(database_url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: sqlalchemy.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)


def new_uow(session_factory: SessionFactory) -> TypedUnitOfWork:
    return TypedUnitOfWork(
        session_factory,
        orders=orders(),
        notes=SqlAlchemyRepository(Note, key="key"),
        manual=SqlAlchemyRepository(ManualOrder, key="number"),
    )


def store_order(session_factory: SessionFactory, number: str = "o1", *skus: str) -> None:
    with new_uow(session_factory) as uow:
        order = Order(number)
        for sku in skus:
            order.add_line(sku, 1)
        uow.orders.add(order)
        uow.commit()


def stored_version(session_factory: SessionFactory, number: str = "o1") -> int:
    with session_factory() as session:
        return session.scalars(select(Order.version).where(Order.number == number)).one()


# -- commit, rollback, close --------------------------------------------------------


def test_committed_changes_are_seen_by_the_next_unit_of_work(
    session_factory: SessionFactory,
) -> None:
    store_order(session_factory, "o1", "LAMP")

    with new_uow(session_factory) as uow:
        order = uow.orders.get("o1")
        assert order is not None
        assert [("LAMP", 1)] == [(line.sku, line.qty) for line in order.lines]
        assert 1 == order.version


def test_work_that_is_not_committed_is_rolled_back_on_close(
    session_factory: SessionFactory,
) -> None:
    uow = new_uow(session_factory)
    uow.orders.add(Order("o1"))
    uow.session.flush()
    uow.close()

    with new_uow(session_factory) as uow:
        assert uow.orders.get("o1") is None


def test_rollback_discards_the_changes_and_the_events_they_raised(
    session_factory: SessionFactory,
) -> None:
    store_order(session_factory, "o1")
    uow = new_uow(session_factory)
    order = uow.orders.get("o1")
    assert order is not None
    order.add_line("LAMP", 2)
    uow.session.flush()

    uow.rollback()
    uow.close()

    assert [] == order.events
    assert [] == uow.collect_new_events()
    with new_uow(session_factory) as uow:
        order = uow.orders.get("o1")
        assert order is not None
        assert [] == order.lines


def test_the_context_manager_rolls_back_on_an_error_and_closes(
    session_factory: SessionFactory,
) -> None:
    uow = new_uow(session_factory)

    def fail_in_unit_of_work() -> None:
        with uow:
            uow.orders.add(Order("o1"))
            uow.session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_in_unit_of_work()

    assert not uow.session.in_transaction()
    with new_uow(session_factory) as uow:
        assert [] == uow.orders.list()


def test_events_are_collected_from_every_aggregate_seen_after_commit(
    session_factory: SessionFactory,
) -> None:
    store_order(session_factory, "o1")
    with new_uow(session_factory) as uow:
        new = Order("o2")
        new.add_line("CHAIR", 1)
        uow.orders.add(new)
        existing = uow.orders.get("o1")
        assert existing is not None
        existing.add_line("LAMP", 1)
        uow.commit()

        assert [LineAdded("o2", "CHAIR"), LineAdded("o1", "LAMP")] == uow.collect_new_events()
        assert [] == uow.collect_new_events()


# -- repositories ---------------------------------------------------------------------


def test_get_finds_by_primary_key_and_by_any_unique_column(
    session_factory: SessionFactory,
) -> None:
    with new_uow(session_factory) as uow:
        uow.notes.add(Note(key="n1", text="hello"))
        uow.orders.add(Order("o1"))
        uow.commit()

    with new_uow(session_factory) as uow:
        note, order = uow.notes.get("n1"), uow.orders.get("o1")
        assert note is not None
        assert order is not None
        assert ("hello", "o1") == (note.text, order.number)
        assert (note, order) == uow.seen
        assert uow.notes.get("n2") is None
        assert uow.orders.get("o2") is None


def test_list_returns_every_aggregate_and_tracks_them(session_factory: SessionFactory) -> None:
    store_order(session_factory, "o1")
    store_order(session_factory, "o2")

    with new_uow(session_factory) as uow:
        found = uow.orders.list()

        assert ["o1", "o2"] == sorted(order.number for order in found)
        assert set(map(id, found)) == set(map(id, uow.seen))


def test_a_subclass_adds_queries_whose_results_are_tracked(
    session_factory: SessionFactory,
) -> None:
    store_order(session_factory, "o1", "LAMP", "CHAIR")
    store_order(session_factory, "o2", "LAMP")
    with SqlAlchemyUnitOfWork(session_factory, orders=OrderRepository(Order, key="number")) as uow:
        repository = uow.orders
        assert isinstance(repository, OrderRepository)
        assert ["o1", "o2"] == sorted(order.number for order in repository.with_sku("LAMP"))
        found = repository.first_with_sku("CHAIR")
        assert found is not None
        assert "o1" == found.number
        assert repository.first_with_sku("TABLE") is None
        assert 2 == len(uow.seen)


def test_one_declaration_serves_every_unit_of_work(session_factory: SessionFactory) -> None:
    declaration = orders()
    first = SqlAlchemyUnitOfWork(session_factory, orders=declaration)
    second = SqlAlchemyUnitOfWork(session_factory, orders=declaration)
    try:
        assert first.orders.session is first.session
        assert second.orders.session is second.session
        with pytest.raises(RuntimeError, match="not bound to a unit of work"):
            declaration.get("o1")
        assert "unbound" in repr(declaration)
        assert "bound" in repr(first.orders)
    finally:
        first.close()
        second.close()


def test_add_refuses_an_aggregate_of_another_type(session_factory: SessionFactory) -> None:
    with (
        new_uow(session_factory) as uow,
        pytest.raises(TypeError, match="holds Order aggregates, not Note"),
    ):
        uow.orders.add(Note(key="n", text="t"))  # type: ignore[arg-type]


def test_an_unknown_repository_is_an_attribute_error_naming_those_there_are(
    session_factory: SessionFactory,
) -> None:
    with (
        new_uow(session_factory) as uow,
        pytest.raises(AttributeError, match="no repository 'products'; it has: orders, notes"),
    ):
        uow.products  # noqa: B018


# -- optimistic concurrency -------------------------------------------------------------


def test_a_change_inside_the_aggregate_increments_its_version(
    session_factory: SessionFactory,
) -> None:
    store_order(session_factory, "o1", "LAMP")

    with new_uow(session_factory) as uow:
        order = uow.orders.get("o1")
        assert order is not None
        order.lines[0].qty = 5  # a child's column, not the root's
        uow.commit()

    assert 2 == stored_version(session_factory)


def test_a_child_added_or_removed_increments_the_version(
    session_factory: SessionFactory,
) -> None:
    store_order(session_factory, "o1", "LAMP")

    with new_uow(session_factory) as uow:
        order = uow.orders.get("o1")
        assert order is not None
        order.add_line("CHAIR", 1)
        uow.commit()
    with new_uow(session_factory) as uow:
        order = uow.orders.get("o1")
        assert order is not None
        uow.session.delete(order.lines[0])
        uow.commit()

    assert 3 == stored_version(session_factory)


def test_reading_an_aggregate_leaves_its_version_alone(session_factory: SessionFactory) -> None:
    store_order(session_factory, "o1", "LAMP")

    with new_uow(session_factory) as uow:
        order = uow.orders.get("o1")
        assert order is not None
        assert ["LAMP"] == [line.sku for line in order.lines]
        uow.notes.add(Note(key="n1", text="another aggregate changed"))
        uow.commit()

    assert 1 == stored_version(session_factory)


def test_every_flush_of_a_change_is_checked(session_factory: SessionFactory) -> None:
    store_order(session_factory, "o1")

    with new_uow(session_factory) as uow:
        order = uow.orders.get("o1")
        assert order is not None
        order.add_line("LAMP", 1)
        uow.session.flush()  # an autoflush before a query does the same
        order.add_line("CHAIR", 1)
        uow.commit()

    assert 3 == stored_version(session_factory)


def test_a_version_the_application_sets_is_kept(session_factory: SessionFactory) -> None:
    store_order(session_factory, "o1", "LAMP")
    with new_uow(session_factory) as uow:
        uow.manual.add(ManualOrder(number="m1", qty=1, version=10))
        order = uow.orders.get("o1")
        assert order is not None
        order.lines[0].qty = 3
        order.version = 7  # set by hand: not incremented again
        uow.commit()
    with new_uow(session_factory) as uow:
        manual = uow.manual.get("m1")
        assert manual is not None
        manual.qty = 2
        manual.version = 20
        uow.commit()

    with session_factory() as session:
        assert 20 == session.get_one(ManualOrder, "m1").version
    assert 7 == stored_version(session_factory)


def test_a_concurrent_change_to_the_aggregate_fails_the_later_commit(
    session_factory: SessionFactory,
) -> None:
    store_order(session_factory, "o1", "LAMP")
    first, second = new_uow(session_factory), new_uow(session_factory)
    try:
        mine, theirs = first.orders.get("o1"), second.orders.get("o1")
        assert mine is not None
        assert theirs is not None
        mine.add_line("CHAIR", 1)
        theirs.lines[0].qty = 9
        first.commit()

        with pytest.raises(StaleDataError) as caught:
            second.commit()
        second.rollback()
    finally:
        first.close()
        second.close()

    assert messagebus.is_transient(caught.value)
    with new_uow(session_factory) as uow:
        order = uow.orders.get("o1")
        assert order is not None
        assert [("LAMP", 1), ("CHAIR", 1)] == [(line.sku, line.qty) for line in order.lines]


# -- through the bus -----------------------------------------------------------------------


@attrs.frozen
class AddLine(Command[int]):
    number: str
    sku: str


def test_the_bus_retries_a_version_conflict_and_dispatches_only_committed_events(
    session_factory: SessionFactory,
) -> None:
    store_order(session_factory, "o1")
    registry = Registry()
    attempts: list[int] = []
    handled: list[LineAdded] = []

    @registry.register
    def add_line(cmd: AddLine, uow: TypedUnitOfWork) -> int:
        order = uow.orders.get(cmd.number)
        assert order is not None
        attempts.append(order.version)
        order.add_line(cmd.sku, 1)
        if len(attempts) == 1:  # someone else changes the order meanwhile
            store_line_elsewhere(session_factory, cmd.number)
        return len(order.lines)

    @registry.register(uow=False)
    def on_line_added(event: LineAdded) -> None:
        handled.append(event)

    bus = MessageBus(registry, uow=lambda: new_uow(session_factory), sleep=lambda _: None)

    assert 2 == bus.handle(AddLine("o1", "LAMP"))
    assert [1, 2] == attempts
    assert [LineAdded("o1", "LAMP")] == handled
    assert 3 == stored_version(session_factory)


def store_line_elsewhere(session_factory: SessionFactory, number: str) -> None:
    with new_uow(session_factory) as uow:
        order = uow.orders.get(number)
        assert order is not None
        order.lines.append(Line(sku="ELSEWHERE", qty=1))
        uow.commit()


def test_a_failed_commit_dispatches_no_event(session_factory: SessionFactory) -> None:
    store_order(session_factory, "o1")
    registry = Registry()
    handled: list[LineAdded] = []

    @registry.register
    def add_line(cmd: AddLine, uow: TypedUnitOfWork) -> int:
        order = uow.orders.get(cmd.number)
        assert order is not None
        order.add_line(cmd.sku, 1)
        store_line_elsewhere(session_factory, cmd.number)  # a conflict, every time
        return 0

    @registry.register(uow=False)
    def on_line_added(event: LineAdded) -> None:
        handled.append(event)

    bus = MessageBus(registry, uow=lambda: new_uow(session_factory), sleep=lambda _: None)

    with pytest.raises(StaleDataError):
        bus.handle(AddLine("o1", "LAMP"))
    assert [] == handled
    assert 1 + 3 == stored_version(session_factory)  # three attempts, each undone


@pytest.mark.integration
def test_a_serialisation_failure_on_postgresql_is_retried(postgres_database: str) -> None:
    engine = sqlalchemy.create_engine(postgres_database, isolation_level="REPEATABLE READ")
    try:
        Base.metadata.create_all(engine)
        session_factory = sessionmaker(engine)
        store_order(session_factory, "o1")
        registry = Registry()
        errors: list[BaseException] = []

        @registry.register
        def add_line(cmd: AddLine, uow: TypedUnitOfWork) -> int:
            order = uow.orders.get(cmd.number)
            assert order is not None
            order.add_line(cmd.sku, 1)
            if not errors:
                store_line_elsewhere(session_factory, cmd.number)
            try:
                uow.session.flush()  # at REPEATABLE READ: a serialisation failure
            except sqlalchemy.exc.OperationalError as exc:
                errors.append(exc)
                raise
            return len(order.lines)

        bus = MessageBus(
            registry, uow=lambda: new_uow(session_factory), retry=RetryPolicy(wait=lambda _: 0)
        )

        assert 2 == bus.handle(AddLine("o1", "LAMP"))
        assert 1 == len(errors)
        assert "40001" == getattr(errors[0], "orig", None).sqlstate  # type: ignore[union-attr]
        assert messagebus.is_transient(errors[0])
    finally:
        engine.dispose()


@pytest.mark.integration
def test_a_deadlock_on_postgresql_is_a_transient_error(postgres_database: str) -> None:
    # Two transactions lock two rows in opposite orders: PostgreSQL breaks the
    # deadlock by failing one of them (SQLSTATE 40P01), which the bus retries.
    engine = sqlalchemy.create_engine(postgres_database)
    update = sqlalchemy.text("UPDATE deadlock_rows SET n = n + 1 WHERE id = :id")
    try:
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text("CREATE TABLE deadlock_rows (id int PRIMARY KEY, n int)")
            )
            connection.execute(sqlalchemy.text("INSERT INTO deadlock_rows VALUES (1, 0), (2, 0)"))
        both_locked = threading.Barrier(2)
        errors: list[BaseException] = []

        def lock(first: int, second: int) -> None:
            with engine.connect() as connection:
                try:
                    with connection.begin():
                        # Detect it at once rather than after the default second;
                        # should it go undetected, the server ends the wait.
                        connection.execute(sqlalchemy.text("SET deadlock_timeout = '10ms'"))
                        connection.execute(sqlalchemy.text("SET lock_timeout = '60s'"))
                        connection.execute(update, {"id": first})
                        both_locked.wait()
                        connection.execute(update, {"id": second})
                except sqlalchemy.exc.DBAPIError as exc:
                    both_locked.abort()  # the other thread must not wait for this one
                    errors.append(exc)

        threads = [
            threading.Thread(target=lock, args=(1, 2)),
            threading.Thread(target=lock, args=(2, 1)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        [error] = errors
        assert "40P01" == getattr(error, "orig", None).sqlstate  # type: ignore[union-attr]
        assert messagebus.is_transient(error)
    finally:
        engine.dispose()


# -- wiring errors ------------------------------------------------------------------------------


def test_a_repository_needs_a_mapped_class_and_one_of_its_columns() -> None:
    class NotMapped:
        pass

    with pytest.raises(messagebus.ConfigurationError, match="is not mapped by SQLAlchemy"):
        SqlAlchemyRepository(NotMapped, key="id")
    with pytest.raises(messagebus.ConfigurationError, match="no mapped column attribute 'sku'"):
        SqlAlchemyRepository(Order, key="sku")
    with pytest.raises(messagebus.ConfigurationError, match="no mapped column attribute 'lines'"):
        SqlAlchemyRepository(Order, key="lines")


@pytest.mark.parametrize("name", ["session", "commit", "seen", "_private"])
def test_a_repository_cannot_take_a_name_the_unit_of_work_uses(
    name: str, session_factory: SessionFactory
) -> None:
    with pytest.raises(messagebus.ConfigurationError, match=f"'{name}' cannot name a repository"):
        SqlAlchemyUnitOfWork(session_factory, **{name: orders()})


def test_repositories_must_be_declared(session_factory: SessionFactory) -> None:
    with pytest.raises(messagebus.ConfigurationError, match="must be a SqlAlchemyRepository"):
        SqlAlchemyUnitOfWork(session_factory, orders=object())  # type: ignore[arg-type]


def test_the_factory_must_make_sessions() -> None:
    with pytest.raises(messagebus.ConfigurationError, match="must make SQLAlchemy Sessions"):
        SqlAlchemyUnitOfWork(lambda: object())  # type: ignore[arg-type,return-value]


def test_sessions_that_no_unit_of_work_made_are_left_alone(
    session_factory: SessionFactory,
) -> None:
    store_order(session_factory, "o1", "LAMP")

    with session_factory() as session:
        order = session.scalars(select(Order)).one()
        order.lines[0].qty = 2
        session.commit()

    assert 1 == stored_version(session_factory)


def test_units_of_work_in_many_threads_share_one_declaration(
    session_factory: SessionFactory,
) -> None:
    for number in range(4):
        store_order(session_factory, f"o{number}")
    declaration = orders()
    found: list[Any] = []

    def work(number: int) -> None:
        with SqlAlchemyUnitOfWork(session_factory, orders=declaration) as uow:
            order = uow.orders.get(f"o{number}")
            found.append((order.number, uow.seen == (order,)))  # type: ignore[union-attr]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [(f"o{n}", True) for n in range(4)] == sorted(found)


def test_the_subpackage_exports_the_unit_of_work_and_the_repository() -> None:
    import messagebus.sqlalchemy

    assert [
        "AsyncSqlAlchemyDeadLetterStore",
        "AsyncSqlAlchemyOutbox",
        "AsyncSqlAlchemyRepository",
        "AsyncSqlAlchemyUnitOfWork",
        "Claim",
        "OutboxEntry",
        "SqlAlchemyDeadLetterStore",
        "SqlAlchemyOutbox",
        "SqlAlchemyRepository",
        "SqlAlchemyUnitOfWork",
        "dead_letter_table",
        "inbox_table",
        "outbox_table",
        "purge_inbox",
    ] == messagebus.sqlalchemy.__all__


def test_a_unit_of_work_used_directly_can_commit_twice(session_factory: SessionFactory) -> None:
    store_order(session_factory, "o1", "LAMP")

    with new_uow(session_factory) as uow:
        order = uow.orders.get("o1")
        assert order is not None
        order.lines[0].qty = 2
        uow.commit()  # expires the order: its version is read again below
        order.lines[0].qty = 3
        uow.commit()

    assert 3 == stored_version(session_factory)


def test_a_subclass_may_declare_the_types_of_its_repositories(
    session_factory: SessionFactory,
) -> None:
    store_order(session_factory, "o1")

    with TypedUnitOfWork(session_factory, orders=orders()) as uow:
        order = uow.orders.get("o1")

        assert order is not None
        assert "o1" == order.number
