"""DESIGN.md §8, inside the process: routing, sending through the outbox, and the inbox.

What a routed message becomes (an ``OutgoingMessage`` staged in the attempt's
unit of work) is checked here on both buses, with units of work that keep what
they stage and claim; the relay and the consumer are tested against real
servers in tests/integration.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from messagebus import (
    Command,
    ConfigurationError,
    Context,
    DispatchError,
    Event,
    MessageBus,
    Metadata,
    Registry,
)
from messagebus.testing import FakeAsyncUnitOfWork, FakeUnitOfWork, InMemoryRepository
from messagebus.transport import OutgoingMessage

from ._buses import Harness


@attrs.frozen
class PlaceOrder(Command[str]):
    orderid: str
    sku: str


@attrs.frozen
class ChargeCustomer(Command[None]):
    customer: str
    amount: int


@attrs.frozen
class OrderPlaced(Event):
    orderid: str
    sku: str


@attrs.frozen
class Audited(Event):
    orderid: str


class Shop:
    """An aggregate that raises OrderPlaced."""

    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.events: list[Event] = []


class Ledger:
    """What the units of work of one test staged, committed, and claimed."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []
        self.claimed: set[tuple[str, str]] = set()


def outboxed(h: Harness, ledger: Ledger) -> Any:
    """A factory of the harness's fake units of work that stage and claim into ``ledger``."""
    base = FakeAsyncUnitOfWork if h.is_async else FakeUnitOfWork
    products = h.products

    class Outboxed(base):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__(products=products)
            self.staged: list[OutgoingMessage] = []
            self.claims: list[tuple[str, str]] = []

        def _present(self, view: Any) -> Any:
            return view

        def stage_outgoing(self, messages: Sequence[OutgoingMessage]) -> None:
            self.staged.extend(messages)

        def _claim(self, message_id: str, handler: str) -> bool:
            if (message_id, handler) in ledger.claimed:
                return False
            self.claims.append((message_id, handler))
            return True

        def _commit_now(self) -> None:
            super()._commit_now()
            ledger.sent.extend(self.staged)
            ledger.claimed.update(self.claims)

    if h.is_async:

        class AsyncOutboxed(Outboxed):
            async def claim_incoming(self, message_id: str, handler: str) -> bool:
                return self._claim(message_id, handler)

        return AsyncOutboxed

    class SyncOutboxed(Outboxed):
        def claim_incoming(self, message_id: str, handler: str) -> bool:
            return self._claim(message_id, handler)

    return SyncOutboxed


def test_a_routed_event_is_handled_here_and_sent_with_the_same_id(h: Harness) -> None:
    ledger = Ledger()
    seen: list[Metadata] = []
    h.products.add(Shop("lamp"))
    h.registry.route(OrderPlaced, to="orders", key="sku")

    @h.register
    def place(cmd: PlaceOrder, uow: Any) -> str:
        shop = uow.products.get(cmd.sku)
        shop.events.append(OrderPlaced(cmd.orderid, cmd.sku))
        return "placed"

    @h.register(uow=False)
    def audit(event: OrderPlaced, metadata: Metadata) -> None:
        seen.append(metadata)

    h.build(uow=outboxed(h, ledger))
    assert "placed" == h.handle(PlaceOrder("o1", "lamp"))

    (sent,) = ledger.sent
    (local,) = seen
    assert ("orders", "lamp", "OrderPlaced", 1) == (
        sent.destination,
        sent.key,
        sent.name,
        sent.version,
    )
    assert {"orderid": "o1", "sku": "lamp"} == json.loads(sent.payload)
    assert str(local.message_id) == sent.message_id == json.loads(sent.metadata)["message_id"]
    assert str(local.causation_id) == json.loads(sent.metadata)["causation_id"]


def test_a_rolled_back_attempt_sends_nothing(h: Harness) -> None:
    ledger = Ledger()
    h.products.add(Shop("lamp"))
    h.registry.route(OrderPlaced, to="orders")

    @h.register
    def place(cmd: PlaceOrder, uow: Any) -> str:
        uow.products.get(cmd.sku).events.append(OrderPlaced(cmd.orderid, cmd.sku))
        raise ValueError("no stock")

    h.build(uow=outboxed(h, ledger))
    with pytest.raises(ValueError, match="no stock"):
        h.handle(PlaceOrder("o1", "lamp"))

    assert [] == ledger.sent


def test_a_routed_command_is_sent_from_a_handler_in_its_transaction_never_handled_here(
    h: Harness,
) -> None:
    ledger = Ledger()
    h.registry.route(ChargeCustomer, to="payments", key="customer")

    @h.register
    def place(cmd: PlaceOrder, uow: Any, context: Context) -> str:
        context.send(ChargeCustomer("ann", 30))
        return "placed"

    h.build(uow=outboxed(h, ledger))
    h.handle(PlaceOrder("o1", "lamp"))

    (sent,) = ledger.sent
    assert ("payments", "ann", "ChargeCustomer") == (sent.destination, sent.key, sent.name)
    with pytest.raises(DispatchError, match="routed to 'payments': its owner handles it"):
        h.handle(ChargeCustomer("bob", 10))


def test_bus_send_writes_a_routed_command_to_the_outbox_and_returns_its_metadata(
    h: Harness,
) -> None:
    ledger = Ledger()
    h.registry.route(ChargeCustomer, to="payments")
    given = Metadata(uuid.uuid4(), uuid.uuid4(), None, Metadata.new().created_at)
    h.build(uow=outboxed(h, ledger))

    metadata = h.call("send", ChargeCustomer("ann", 30), metadata=given)

    assert given == metadata
    (sent,) = ledger.sent
    assert (str(given.message_id), str(given.correlation_id)) == (sent.message_id, sent.key)


def test_what_is_not_routed_cannot_be_sent(h: Harness) -> None:
    ledger = Ledger()
    h.registry.route(OrderPlaced, to="orders")

    @h.register
    def place(cmd: PlaceOrder, uow: Any, context: Context) -> str:
        context.send(ChargeCustomer("ann", 30))
        return "placed"

    h.build(uow=outboxed(h, ledger))
    with pytest.raises(DispatchError, match="ChargeCustomer is not routed"):
        h.handle(PlaceOrder("o1", "lamp"))
    with pytest.raises(DispatchError, match="ChargeCustomer is not routed"):
        h.call("send", ChargeCustomer("ann", 30))
    assert [] == ledger.sent


def test_a_handler_without_a_unit_of_work_cannot_send_a_command(h: Harness) -> None:
    h.registry.route(ChargeCustomer, to="payments")

    @h.register(uow=False)
    def place(cmd: PlaceOrder, context: Context) -> str:
        context.send(ChargeCustomer("ann", 30))
        return "placed"

    h.build(uow=outboxed(h, Ledger()))
    with pytest.raises(DispatchError, match="needs the handler's unit of work"):
        h.handle(PlaceOrder("o1", "lamp"))


def test_a_routed_event_raised_without_a_unit_of_work_is_sent_in_one_of_its_own(
    h: Harness,
) -> None:
    ledger = Ledger()
    h.registry.route(Audited, to="audit")

    @h.register(uow=False)
    def place(cmd: PlaceOrder, context: Context) -> str:
        context.emit(Audited(cmd.orderid))
        return "placed"

    h.build(uow=outboxed(h, ledger))
    h.handle(PlaceOrder("o1", "lamp"))

    assert ["audit"] == [sent.destination for sent in ledger.sent]


def test_a_delivered_message_is_handled_once_by_each_handler_with_a_unit_of_work(
    h: Harness,
) -> None:
    ledger = Ledger()
    handled: list[str] = []

    @h.register
    def record(event: OrderPlaced, uow: Any) -> None:
        handled.append("record")

    @h.register(uow=False)
    def notify(event: OrderPlaced) -> None:
        handled.append("notify")  # no unit of work, no inbox: at least once

    h.build(uow=outboxed(h, ledger))
    metadata = Metadata.new()
    h.call("_handle_delivered", OrderPlaced("o1", "lamp"), metadata)
    h.call("_handle_delivered", OrderPlaced("o1", "lamp"), metadata)  # delivered again

    assert ["record", "notify", "notify"] == handled
    assert {
        (str(metadata.message_id), f"{record.__module__}.{record.__qualname__}")
    } == ledger.claimed


@pytest.mark.one_bus("checks of the wiring when the bus is built, shared code")
def test_routing_is_checked_when_declared_and_when_the_bus_is_built() -> None:
    registry = Registry()
    with pytest.raises(ConfigurationError, match="has no field 'skew'"):
        registry.route(OrderPlaced, to="orders", key="skew")
    with pytest.raises(ConfigurationError, match="non-empty name"):
        registry.route(OrderPlaced, to=" ")
    with pytest.raises(ConfigurationError, match="only Command and Event types"):
        registry.route(str, to="orders")  # type: ignore[arg-type]
    registry.route(OrderPlaced, to="orders")
    with pytest.raises(ConfigurationError, match="routed already, to 'orders'"):
        registry.route(OrderPlaced, to="elsewhere")

    with pytest.raises(ConfigurationError, match="no unit of work to write them"):
        MessageBus(registry)

    owner = Registry()
    owner.route(ChargeCustomer, to="payments")

    @owner.register
    def charge(cmd: ChargeCustomer, uow: Any) -> None:
        pass

    with pytest.raises(ConfigurationError, match="routed out of the process and also handled"):
        MessageBus(owner, uow=lambda: FakeUnitOfWork(products=InMemoryRepository(key=id)))


def test_a_routed_event_given_to_handle_is_sent_and_handled_here_with_one_id(
    h: Harness,
) -> None:
    ledger = Ledger()
    seen: list[Metadata] = []
    h.registry.route(Audited, to="audit")

    @h.register(uow=False)
    def record(event: Audited, metadata: Metadata) -> None:
        seen.append(metadata)

    h.build(uow=outboxed(h, ledger))
    h.handle(Audited("o1"))

    (sent,) = ledger.sent
    assert str(seen[0].message_id) == sent.message_id


def test_a_command_sent_on_a_bus_without_routes_is_refused_not_lost(h: Harness) -> None:
    @h.register
    def place(cmd: PlaceOrder, uow: Any, context: Context) -> str:
        context.send(ChargeCustomer("ann", 30))
        return "placed"

    h.build()
    with pytest.raises(DispatchError, match="ChargeCustomer is not routed"):
        h.handle(PlaceOrder("o1", "lamp"))


@pytest.mark.one_bus("a check when the bus is built, shared code")
def test_a_routed_command_counts_as_handled_for_require_handlers() -> None:
    registry = Registry()
    registry.route(ChargeCustomer, to="payments")
    MessageBus(
        registry,
        uow=lambda: FakeUnitOfWork(products=InMemoryRepository(key=id)),
        require_handlers=[ChargeCustomer],
    )
