"""The bus at work, in one file: run it with `python examples/quickstart.py`.

A command is handled and raises events; one event handler fails and is
isolated from the others; another fails transiently once and is retried.
"""

from __future__ import annotations

import logging
from collections import Counter

import attrs
import structlog

import messagebus
from messagebus import Command, Context, Event, MessageBus, Metadata, Registry, Transient


@attrs.frozen
class PlaceOrder(Command[str]):
    """Place an order for a customer; the handler returns the order's reference."""

    customer: str
    sku: str
    qty: int


@attrs.frozen
class CancelOrder(Command[None]):
    reference: str


@attrs.frozen
class OrderPlaced(Event):
    reference: str
    customer: str
    sku: str
    qty: int


class MailServerBusy(Transient):
    """The mail server asked us to try again later: worth a retry."""


registry = Registry()
orders: dict[str, PlaceOrder] = {}
attempts: Counter[str] = Counter()


@registry.register(uow=False)
def place_order(command: PlaceOrder, context: Context) -> str:
    reference = f"order-{len(orders) + 1}"
    orders[reference] = command
    context.emit(OrderPlaced(reference, command.customer, command.sku, command.qty))
    return reference


@registry.register(uow=False)
def reserve_stock(event: OrderPlaced, metadata: Metadata) -> None:
    print(f"  reserve_stock: {event.qty} x {event.sku} for {event.reference}")
    print(f"    caused by message {metadata.causation_id}")


@registry.register(uow=False)
def award_loyalty_points(event: OrderPlaced) -> None:
    raise ValueError(f"no loyalty account for customer {event.customer!r}")


@registry.register(uow=False)
def send_confirmation(event: OrderPlaced) -> None:
    attempts[event.reference] += 1
    if attempts[event.reference] == 1:
        raise MailServerBusy("421 try again later")
    print(f"  send_confirmation: mailed {event.customer} (attempt {attempts[event.reference]})")


def main() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    waits: list[float] = []
    bus = MessageBus(registry, sleep=waits.append)  # record retry waits instead of sleeping

    print("1. A command; its handler raises OrderPlaced, handled by three handlers:")
    reference = bus.handle(PlaceOrder("ada", "RED-CHAIR", 2))
    print(f"  bus.handle(PlaceOrder(...)) returned {reference!r} after all of them ran")
    print()
    print("2. award_loyalty_points failed; it was logged above and the other handlers ran.")
    print(f"3. send_confirmation failed transiently, was retried after {waits[0]:.3f}s, and")
    print(f"   succeeded on attempt {attempts[reference]}.")
    print()
    print("4. A command without a handler fails loudly:")
    try:
        bus.handle(CancelOrder("order-1"))
    except messagebus.NoHandlerError as error:
        print(f"  {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
