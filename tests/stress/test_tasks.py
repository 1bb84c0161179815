"""One async bus shared by 200 tasks: nothing lost, nothing duplicated, nothing crossed.

Each of 200 tasks sends 50 commands through the same bus, letting the others in
between; every command raises one event that two handlers handle.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import attrs
import pytest

from messagebus import AsyncMessageBus, Command, Context, Event, Metadata, Registry


@attrs.frozen
class Allocate(Command[str]):
    orderid: str


@attrs.frozen
class Allocated(Event):
    orderid: str


@pytest.mark.slow
def test_200_tasks_share_one_bus_and_every_event_is_handled_once_by_each_handler() -> None:
    registry = Registry()
    first: Counter[str] = Counter()
    second: Counter[str] = Counter()
    causes: dict[str, Any] = {}

    @registry.register(uow=False)
    async def allocate(cmd: Allocate, context: Context) -> str:
        await asyncio.sleep(0)  # let other tasks in between
        context.emit(Allocated(cmd.orderid))
        return cmd.orderid

    @registry.register(uow=False)
    async def count_first(event: Allocated, metadata: Metadata) -> None:
        await asyncio.sleep(0)
        first[event.orderid] += 1
        causes[event.orderid] = metadata.causation_id

    @registry.register(uow=False)
    async def count_second(event: Allocated) -> None:
        second[event.orderid] += 1

    bus = AsyncMessageBus(registry)

    async def one_task(task: int) -> list[bool]:
        results = []
        for n in range(50):
            orderid = f"{task}-{n}"
            results.append(orderid == await bus.handle(Allocate(orderid)))
        return results

    async def main() -> list[list[bool]]:
        return await asyncio.gather(*(one_task(task) for task in range(200)))

    results = asyncio.run(main())

    expected = {f"{t}-{n}": 1 for t in range(200) for n in range(50)}
    assert all(all(r) for r in results)
    assert expected == dict(first)
    assert expected == dict(second)
    assert 10_000 == len(set(causes.values()))
