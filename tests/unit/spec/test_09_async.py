"""DESIGN.md §9, Async: what only the async bus promises, beside the rest of the spec.

Every other test of this specification runs on the async bus too (the ``h``
fixture); here are async handlers, cancellation, async retry strategies, and
the sync code generated from the async source.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import tenacity

from messagebus import (
    AsyncMessageBus,
    Command,
    ConfigurationError,
    Event,
    Registry,
    RetryPolicy,
)
from messagebus.testing import FakeAsyncUnitOfWork, InMemoryRepository

pytestmark = pytest.mark.one_bus("what only the async bus promises")

ROOT = Path(__file__).resolve().parents[3]


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


def test_the_sync_bus_code_generated_from_the_async_source_has_not_drifted() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_sync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
