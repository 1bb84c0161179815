"""How an application uses the async bus, checked by ``mypy --strict``.

``tests/typing/test_typing.py`` type-checks this file and runs it. Every
``assert_type`` states what mypy infers: above all, that ``await
bus.handle()`` is the result type that the command declares, as with the
sync bus (``api.py``).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Coroutine
from typing import Any

import attrs

from messagebus import (
    AbstractAsyncUnitOfWork,
    AsyncMessageBus,
    Command,
    Context,
    Event,
    Message,
    Metadata,
    Registry,
    RetryPolicy,
)
from messagebus.otel import async_tracing
from messagebus.testing import FakeAsyncUnitOfWork, InMemoryRepository

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


@registry.register
async def allocate(command: Allocate, uow: FakeAsyncUnitOfWork) -> str:
    batch: Batch | None = await uow.batches.get("b1")
    assert batch is not None
    batch.qty -= command.qty
    batch.events.append(Allocated(command.orderid, batch.ref))
    return batch.ref


@registry.register(retry=RetryPolicy.no_retries())
async def change_batch_quantity(command: ChangeBatchQuantity, uow: AbstractAsyncUnitOfWork) -> None:
    pass


allocations: list[tuple[str, uuid.UUID | None]] = []


@registry.register(uow=False)
async def on_allocated(event: Allocated, metadata: Metadata, context: Context) -> None:
    allocations.append((event.batchref, metadata.causation_id))
    assert_type(context.message, Message)


async def sleep(seconds: float) -> None:
    pass


bus = AsyncMessageBus(registry, uow=lambda: FakeAsyncUnitOfWork(batches=batches), sleep=sleep)
traced = AsyncMessageBus(Registry(), middleware=[async_tracing()])


async def main() -> None:
    assert_type(await bus.handle(Allocate("o1", "LAMP", 10)), str)
    assert_type(await bus.handle(Allocate("o2", "LAMP", 1), metadata=Metadata.new()), str)
    # A command without a result, and an event, give None (mypy refuses to use an
    # awaited None as a value, so the coroutine's type says it).
    await assert_type(bus.handle(ChangeBatchQuantity("b1", 50)), Coroutine[Any, Any, None])
    await assert_type(bus.handle(Allocated("o3", "b1")), Coroutine[Any, Any, None])
    # A decorated handler keeps its own signature.
    assert_type(
        await allocate(Allocate("o4", "LAMP", 1), FakeAsyncUnitOfWork(batches=batches)), str
    )

    ref: str = await bus.handle(Allocate("o5", "LAMP", 1))
    assert ref.upper() == "B1"
    data = bus.serializer.dump(Allocate("o6", "LAMP", 1))
    assert_type(bus.serializer.load(data), Message)


asyncio.run(main())
