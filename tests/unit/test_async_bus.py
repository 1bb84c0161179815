"""What only the async bus promises: async handlers, tasks, cancellation, generated code."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest
import tenacity

from messagebus import (
    AsyncMessageBus,
    Command,
    ConfigurationError,
    Context,
    Event,
    Metadata,
    Registry,
    RetryPolicy,
)
from messagebus.testing import FakeAsyncUnitOfWork, InMemoryRepository

ROOT = Path(__file__).resolve().parents[2]


@attrs.frozen
class Allocate(Command[str]):
    orderid: str


@attrs.frozen
class Allocated(Event):
    orderid: str


def test_a_plain_function_handler_is_refused_naming_it() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        return "ok"

    with pytest.raises(ConfigurationError, match=r"allocate.*async def"):
        AsyncMessageBus(registry)


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


def test_a_cancelled_handle_rolls_back_dispatches_nothing_and_reaches_the_caller() -> None:
    registry = Registry()
    products: InMemoryRepository[Any] = InMemoryRepository(key=lambda p: p["sku"])
    products.add({"sku": "lamp", "events": []})
    uows: list[FakeAsyncUnitOfWork] = []
    handled: list[str] = []
    calls: list[str] = []
    started = asyncio.Event()

    @registry.register
    async def allocate(cmd: Allocate, uow: Any) -> str:
        calls.append(cmd.orderid)
        (await uow.products.get("lamp"))["events"].append(Allocated(cmd.orderid))
        if len(calls) > 1:  # retried: a bus that swallowed the cancellation gets a result
            return "retried"
        started.set()
        await asyncio.Event().wait()  # until cancelled
        return "never"

    @registry.register(uow=False)
    async def on_allocated(event: Allocated) -> None:
        handled.append(event.orderid)

    def factory() -> FakeAsyncUnitOfWork:
        uows.append(FakeAsyncUnitOfWork(products=products))
        return uows[-1]

    bus = AsyncMessageBus(registry, uow=factory)

    async def main() -> None:
        task = asyncio.create_task(bus.handle(Allocate("o1")))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())

    assert ["o1"] == calls

    assert [] == handled
    assert [(0, 1, True)] == [(u.committed, u.rolled_back, u.closed) for u in uows]


def test_retries_await_the_injected_sleep_and_accept_async_strategies() -> None:
    registry = Registry()
    attempts: list[int] = []
    slept: list[float] = []

    async def retry_timeouts(state: tenacity.RetryCallState) -> bool:
        await asyncio.sleep(0)
        return isinstance(state.outcome.exception(), TimeoutError)  # type: ignore[union-attr]

    policy = RetryPolicy(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.5), retry=retry_timeouts
    )

    @registry.register(uow=False, retry=policy)
    async def allocate(cmd: Allocate) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise TimeoutError("busy")
        return "ok"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    bus = AsyncMessageBus(registry, sleep=sleep)

    assert "ok" == asyncio.run(bus.handle(Allocate("o1")))
    assert [0.5, 0.5] == slept


def test_the_generated_sync_dispatch_modules_match_their_async_sources() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_sync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
