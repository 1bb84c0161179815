"""How an application uses messagebus, checked by ``mypy --strict``.

``tests/typing/test_typing.py`` type-checks this file and runs it. Every
``assert_type`` states what mypy infers: above all, that ``bus.handle()``
returns the result type that the command declares.
"""

from __future__ import annotations

import logging
import sys
import uuid

import attrs

from messagebus import (
    AbstractUnitOfWork,
    Command,
    Context,
    Event,
    Message,
    MessageBus,
    Metadata,
    Registry,
    RetryPolicy,
)
from messagebus.logging import configure_logging
from messagebus.otel import tracing
from messagebus.testing import FakeUnitOfWork, InMemoryRepository

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type


@attrs.frozen
class Allocate(Command[str]):
    orderid: str
    sku: str
    qty: int


@attrs.frozen
class ChangeBatchQuantity(Command[None]):
    ref: str
    qty: int


@attrs.frozen
class Allocated(Event, name="allocation.Allocated", version=2):
    orderid: str
    batchref: str


@attrs.define
class Batch:
    ref: str
    qty: int
    events: list[Event] = attrs.Factory(list)


registry = Registry()
batches: InMemoryRepository[Batch] = InMemoryRepository(key=lambda batch: batch.ref)
batches.add(Batch("b1", 100))


@registry.register(message=Allocate, raises=[Allocated])
def allocate(command: Allocate, uow: FakeUnitOfWork) -> str:
    batch: Batch | None = uow.batches.get("b1")
    assert batch is not None
    batch.qty -= command.qty
    batch.events.append(Allocated(command.orderid, batch.ref))
    return batch.ref


@registry.register(retry=RetryPolicy.no_retries())
def change_batch_quantity(command: ChangeBatchQuantity, uow: AbstractUnitOfWork) -> None:
    pass


allocations: list[tuple[str, uuid.UUID | None]] = []


@registry.register(uow=False)
def on_allocated(event: Allocated, metadata: Metadata, context: Context) -> None:
    allocations.append((event.batchref, metadata.causation_id))
    assert_type(context.message, Message)


bus = MessageBus(registry, uow=lambda: FakeUnitOfWork(batches=batches), sleep=lambda s: None)

assert_type(bus.handle(Allocate("o1", "LAMP", 10)), str)
assert_type(bus.handle(Allocate("o2", "LAMP", 1), metadata=Metadata.new()), str)
assert_type(bus.handle(ChangeBatchQuantity("b1", 50)), None)
assert_type(bus.handle(Allocated("o3", "b1")), None)
# A decorated handler keeps its own signature.
assert_type(allocate(Allocate("o4", "LAMP", 1), FakeUnitOfWork(batches=batches)), str)

assert_type(bus.graph(), str)
assert_type(registry.graph("dot"), str)
traced = MessageBus(Registry(), middleware=[tracing()])

ref: str = bus.handle(Allocate("o5", "LAMP", 1))
assert ref.upper() == "B1"
data = bus.serializer.dump(Allocate("o6", "LAMP", 1))
assert_type(bus.serializer.load(data), Message)
assert_type(bus.serializer.load(Allocate, {"orderid": "o7", "sku": "LAMP", "qty": 1}), Allocate)


def configure(stdlib: bool) -> None:
    """Logging set up from a setting known only at run time (not called here)."""
    assert_type(configure_logging(stdlib=stdlib), logging.Handler | None)
    assert_type(configure_logging(stdlib=True), logging.Handler)
    assert_type(configure_logging(stdlib=False), None)
