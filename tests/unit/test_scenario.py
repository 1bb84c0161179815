"""Given / when / then: checks that read as the use case, and failures that show a diff."""

from __future__ import annotations

import asyncio
import re

import attrs
import pytest

from messagebus import AsyncMessageBus, Command, Event, MessageBus, Registry, RetryPolicy
from messagebus.testing import (
    AsyncScenario,
    FakeAsyncUnitOfWork,
    FakeUnitOfWork,
    InMemoryRepository,
    Recorder,
    Scenario,
)


@attrs.frozen
class CreateBatch(Command[None]):
    ref: str
    sku: str
    qty: int


@attrs.frozen
class Allocate(Command[str]):
    orderid: str
    sku: str
    qty: int


@attrs.frozen
class Allocated(Event):
    orderid: str
    sku: str
    qty: int
    batchref: str


@attrs.frozen
class OutOfStock(Event):
    sku: str


@attrs.frozen
class Notified(Event):
    sku: str


class UnknownSku(Exception):
    pass


class Product:
    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.batches: dict[str, int] = {}
        self.events: list[Event] = []

    def allocate(self, orderid: str, qty: int) -> str:
        for ref, available in sorted(self.batches.items()):
            if available >= qty:
                self.batches[ref] = available - qty
                self.events.append(Allocated(orderid, self.sku, qty, ref))
                return ref
        self.events.append(OutOfStock(self.sku))
        return ""


def make_registry(notifications: list[str]) -> Registry:
    registry = Registry()

    @registry.register
    def create_batch(cmd: CreateBatch, uow: FakeUnitOfWork) -> None:
        product = uow.products.get(cmd.sku)
        if product is None:
            product = Product(cmd.sku)
            uow.products.add(product)
        product.batches[cmd.ref] = cmd.qty

    @registry.register
    def allocate(cmd: Allocate, uow: FakeUnitOfWork) -> str:
        product = uow.products.get(cmd.sku)
        if product is None:
            raise UnknownSku(f"unknown sku {cmd.sku}")
        return product.allocate(cmd.orderid, cmd.qty)  # type: ignore[no-any-return]

    @registry.register(uow=False, retry=RetryPolicy.no_retries())
    def notify(event: OutOfStock) -> None:
        if event.sku == "BROKEN":
            raise ConnectionError("mail server down")
        notifications.append(event.sku)

    return registry


@pytest.fixture
def products() -> InMemoryRepository[Product]:
    return InMemoryRepository(key=lambda product: product.sku)


@pytest.fixture
def notifications() -> list[str]:
    return []


@pytest.fixture
def scenario(products: InMemoryRepository[Product], notifications: list[str]) -> Scenario:
    bus = MessageBus(
        make_registry(notifications),
        uow=lambda: FakeUnitOfWork(products=products),
        listeners=[Recorder()],
    )
    return Scenario(bus)


def failure_text(excinfo: pytest.ExceptionInfo[AssertionError]) -> str:
    return str(excinfo.value)


def test_then_raised_passes_when_exactly_these_events_were_raised(scenario: Scenario) -> None:
    (
        scenario.given(CreateBatch("b1", "LAMP", 10))
        .when(Allocate("o1", "LAMP", 2))
        .then_raised(Allocated("o1", "LAMP", 2, "b1"))
        .then_returned("b1")
    )
    assert "b1" == scenario.result
    assert scenario.error is None
    assert Allocate("o1", "LAMP", 2) == scenario.message


def test_then_raised_only_counts_what_followed_from_the_when(scenario: Scenario) -> None:
    # The given's own events (none here, and OutOfStock below) are not the when's.
    scenario.given(CreateBatch("b1", "LAMP", 1), Allocate("o0", "LAMP", 5))
    scenario.when(Allocate("o1", "LAMP", 1))
    scenario.then_raised(Allocated("o1", "LAMP", 1, "b1"))


def test_a_failing_then_raised_shows_a_diff_of_the_events(scenario: Scenario) -> None:
    scenario.given(CreateBatch("b1", "LAMP", 10)).when(Allocate("o1", "LAMP", 2))

    with pytest.raises(AssertionError) as excinfo:
        scenario.then_raised(Allocated("o1", "LAMP", 2, "b2"))

    text = failure_text(excinfo)
    assert text.startswith(
        "then_raised: expected 1 event; Allocate(orderid='o1', sku='LAMP', qty=2) raised 1 event:"
    )
    assert "  (- expected, + raised)" in text
    assert "  - Allocated(orderid='o1', sku='LAMP', qty=2, batchref='b2')" in text
    assert "  + Allocated(orderid='o1', sku='LAMP', qty=2, batchref='b1')" in text
    # ndiff's hint line points at the character that differs.
    hints = [line for line in text.splitlines() if line.lstrip().startswith("?")]
    assert len(hints) == 2
    assert "what the bus did:" in text


def test_a_missing_event_is_shown_as_missing(scenario: Scenario) -> None:
    scenario.given(CreateBatch("b1", "LAMP", 1)).when(Allocate("o1", "LAMP", 2))

    with pytest.raises(AssertionError) as excinfo:
        scenario.then_raised()

    text = failure_text(excinfo)
    assert "expected 0 events;" in text
    assert "  + OutOfStock(sku='LAMP')" in text


def test_then_raised_not_exactly_accepts_others_around_the_expected_ones(
    scenario: Scenario,
) -> None:
    scenario.given(CreateBatch("b1", "LAMP", 1)).when(OutOfStock("LAMP"))
    scenario.then_nothing_raised()

    other = Scenario(scenario.bus)
    other.when(Allocate("o1", "LAMP", 5))
    other.then_raised(OutOfStock("LAMP"), exactly=False)
    with pytest.raises(AssertionError, match="among those raised, in this order"):
        other.then_raised(Allocated("o1", "LAMP", 5, "b1"), exactly=False)


def test_then_error_checks_the_exception_that_reached_the_caller(scenario: Scenario) -> None:
    scenario.when(Allocate("o1", "SOFA", 1))

    scenario.then_error(UnknownSku, match="unknown sku SOFA")
    assert isinstance(scenario.error, UnknownSku)

    with pytest.raises(AssertionError, match=r"to raise KeyError, but it raised UnknownSku"):
        scenario.then_error(KeyError)
    with pytest.raises(AssertionError, match=r"does not match 'CHAIR'"):
        scenario.then_error(UnknownSku, match="CHAIR")


def test_then_error_fails_when_the_when_succeeded(scenario: Scenario) -> None:
    scenario.given(CreateBatch("b1", "LAMP", 10)).when(Allocate("o1", "LAMP", 2))

    with pytest.raises(AssertionError, match=r"to raise UnknownSku, but it returned 'b1'"):
        scenario.then_error(UnknownSku)


def test_checks_of_success_fail_with_the_when_s_error_as_cause(scenario: Scenario) -> None:
    scenario.when(Allocate("o1", "SOFA", 1))

    with pytest.raises(AssertionError) as excinfo:
        scenario.then_raised()

    assert failure_text(excinfo).startswith(
        "then_raised: when Allocate(orderid='o1', sku='SOFA', qty=1) raised UnknownSku: "
        "unknown sku SOFA"
    )
    assert isinstance(excinfo.value.__cause__, UnknownSku)
    with pytest.raises(AssertionError, match=r"^result: when"):
        _ = scenario.result


def test_then_returned_compares_the_result(scenario: Scenario) -> None:
    scenario.given(CreateBatch("b1", "LAMP", 10)).when(Allocate("o1", "LAMP", 2))

    with pytest.raises(AssertionError, match=r"then_returned: expected 'b2', but .* returned 'b1'"):
        scenario.then_returned("b2")


def test_then_state_runs_a_check_or_compares_a_value(
    scenario: Scenario, products: InMemoryRepository[Product]
) -> None:
    scenario.given(CreateBatch("b1", "LAMP", 10), CreateBatch("b2", "LAMP", 5))
    scenario.when(Allocate("o1", "LAMP", 2))

    def batches() -> dict[str, int]:
        product = products.get("LAMP")
        assert product is not None
        return product.batches

    scenario.then_state(batches, {"b1": 8, "b2": 5})
    scenario.then_state(lambda: batches()["b1"] == 8)
    with pytest.raises(AssertionError) as excinfo:
        scenario.then_state(batches, {"b1": 7, "b2": 5})
    text = failure_text(excinfo)
    assert "then_state: batches() is not what was expected" in text
    assert "  - 'b1': 7" in text
    assert "  + 'b1': 8" in text
    with pytest.raises(AssertionError, match=r"then_state: <lambda>\(\) returned False"):
        scenario.then_state(lambda: batches()["b1"] == 7)
    with pytest.raises(AssertionError) as excinfo:
        scenario.then_state(lambda: sorted(batches()), ["b1", "b3"])
    assert ["    'b1'", "  - 'b3'", "  + 'b2'"] == [
        line for line in failure_text(excinfo).splitlines()[2:7] if "?" not in line
    ]
    with pytest.raises(AssertionError) as excinfo:
        scenario.then_state(lambda: batches()["b1"], 7)
    assert ["  - 7", "  + 8"] == failure_text(excinfo).splitlines()[2:4]


def test_then_handler_failed_sees_an_isolated_event_handler_give_up(
    scenario: Scenario, notifications: list[str]
) -> None:
    scenario.given(CreateBatch("b1", "BROKEN", 1)).when(Allocate("o1", "BROKEN", 5))

    scenario.then_returned("").then_raised(OutOfStock("BROKEN"))
    scenario.then_handler_failed("notify", ConnectionError, match="down")
    with pytest.raises(AssertionError, match=r"to give up with KeyError; it gave up with "):
        scenario.then_handler_failed("notify", KeyError)
    with pytest.raises(AssertionError, match=r"create_batch to give up .*; it did not give up"):
        scenario.then_handler_failed("create_batch")
    assert [] == notifications


def test_the_failure_shows_what_the_bus_did_with_handlers_that_gave_up(
    scenario: Scenario,
) -> None:
    scenario.given(CreateBatch("b1", "BROKEN", 1)).when(Allocate("o1", "BROKEN", 5))

    with pytest.raises(AssertionError) as excinfo:
        scenario.then_raised(Notified("BROKEN"))

    what_it_did = failure_text(excinfo).split("what the bus did:\n")[1].splitlines()
    assert "  Allocate(orderid='o1', sku='BROKEN', qty=5)" == what_it_did[0]
    assert "    OutOfStock(sku='BROKEN')" == what_it_did[1]
    assert re.fullmatch(
        r"      ! \S+notify gave up after 1 attempt: ConnectionError: mail server down",
        what_it_did[2],
    )


def test_a_given_that_fails_fails_the_test_as_a_broken_scene(scenario: Scenario) -> None:
    with pytest.raises(AssertionError, match=r"^given Allocate.*: it failed with UnknownSku"):
        scenario.given(Allocate("o1", "SOFA", 1))


def test_a_given_whose_event_handler_gives_up_fails_the_test(scenario: Scenario) -> None:
    scenario.given(CreateBatch("b1", "BROKEN", 1))

    with pytest.raises(AssertionError, match=r"a handler gave up") as excinfo:
        scenario.given(Allocate("o1", "BROKEN", 5))
    assert "ConnectionError: mail server down" in failure_text(excinfo)


def test_the_steps_come_in_order(scenario: Scenario) -> None:
    with pytest.raises(RuntimeError, match="has not run yet"):
        scenario.then_raised()

    scenario.when(OutOfStock("LAMP"))

    with pytest.raises(RuntimeError, match="one when"):
        scenario.when(OutOfStock("LAMP"))
    with pytest.raises(RuntimeError, match="given\\(\\) comes before when"):
        scenario.given(OutOfStock("LAMP"))
    with pytest.raises(TypeError, match="takes a Command or an Event"):
        Scenario(scenario.bus).when("Allocate")  # type: ignore[arg-type]
    assert "<Scenario at when OutOfStock(sku='LAMP')>" == repr(scenario)


def test_a_scenario_needs_a_bus_that_a_recorder_listens_to() -> None:
    registry = make_registry([])
    recorder = Recorder()

    with pytest.raises(ValueError, match=r"one Recorder among its listeners \(it has 0\)"):
        Scenario(MessageBus(registry, uow=FakeUnitOfWork))
    with pytest.raises(ValueError, match=r"\(it has 2\)"):
        Scenario(MessageBus(registry, uow=FakeUnitOfWork, listeners=[Recorder(), Recorder()]))
    with pytest.raises(ValueError, match="does not tell this recorder"):
        Scenario(MessageBus(registry, uow=FakeUnitOfWork, listeners=[Recorder()]), recorder)
    bus = MessageBus(registry, uow=FakeUnitOfWork, listeners=[Recorder(), recorder])
    assert Scenario(bus, recorder).recorder is recorder


def make_async_registry() -> Registry:
    registry = Registry()

    @registry.register
    async def create_batch(cmd: CreateBatch, uow: FakeAsyncUnitOfWork) -> None:
        product = Product(cmd.sku)
        product.batches[cmd.ref] = cmd.qty
        uow.products.add(product)

    @registry.register
    async def allocate(cmd: Allocate, uow: FakeAsyncUnitOfWork) -> str:
        product = await uow.products.get(cmd.sku)
        if product is None:
            raise UnknownSku(cmd.sku)
        return product.allocate(cmd.orderid, cmd.qty)  # type: ignore[no-any-return]

    return registry


def test_the_async_scenario_awaits_given_and_when() -> None:
    products: InMemoryRepository[Product] = InMemoryRepository(key=lambda product: product.sku)
    bus = AsyncMessageBus(
        make_async_registry(),
        uow=lambda: FakeAsyncUnitOfWork(products=products),
        listeners=[Recorder()],
    )

    async def scenario() -> AsyncScenario:
        scenario = AsyncScenario(bus)
        await scenario.given(CreateBatch("b1", "LAMP", 10))
        return await scenario.when(Allocate("o1", "LAMP", 2))

    done = asyncio.run(scenario())

    done.then_raised(Allocated("o1", "LAMP", 2, "b1")).then_returned("b1")
    with pytest.raises(AssertionError, match=r"- Allocated\(orderid='o2'"):
        done.then_raised(Allocated("o2", "LAMP", 2, "b1"))


def test_the_async_scenario_keeps_the_error_and_fails_a_broken_given() -> None:
    bus = AsyncMessageBus(
        make_async_registry(),
        uow=lambda: FakeAsyncUnitOfWork(products=InMemoryRepository(key=lambda p: p.sku)),
        listeners=[Recorder()],
    )

    async def run() -> AsyncScenario:
        failing = AsyncScenario(bus)
        with pytest.raises(AssertionError, match="it failed with UnknownSku"):
            await failing.given(Allocate("o0", "SOFA", 1))
        return await AsyncScenario(bus).when(Allocate("o1", "SOFA", 1))

    asyncio.run(run()).then_error(UnknownSku, match="SOFA")
