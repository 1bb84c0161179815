"""This project's AsyncMessageBus, set up as the sync one is (``bench/impls/messagebus.py``),
in the same logging set-ups.

The handlers are the ``async def`` twins in ``_mbapp``; S4's unit of work is
``messagebus.testing.FakeAsyncUnitOfWork``. S7 (threads) does not apply.
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs

import messagebus
from bench._api import Case, NotApplicable, NotAvailableYet, expect
from bench._catalogue import ALONE, LINES_PER_OPERATION
from bench.impls import _mbapp as app
from bench.impls._domain import ORDERID, QTY, SKU
from bench.impls.messagebus import configure_logs, logging_variant
from bench.impls.messagebus import versions as project_versions
from messagebus import Command, Registry


def versions() -> dict[str, str]:
    return project_versions()


def _s6_bus(bus_type: Any, count: int) -> tuple[Any, Command[str]]:
    @attrs.frozen
    class Ping(Command[str]):
        orderid: str

    async def handle_ping(cmd: Ping) -> str:
        return cmd.orderid

    types = [
        type(f"Ping{i}", (Ping,), {"__slots__": (), "__qualname__": f"Ping{i}"})
        for i in range(count)
    ]
    registry = Registry()
    registry.register(handle_ping, message=types, uow=False)
    return bus_type(registry), types[count // 2](ORDERID)


def setup(scenario: str, variant: str | None) -> Case:
    bus_type = getattr(messagebus, "AsyncMessageBus", None)
    if bus_type is None:
        raise NotAvailableYet("messagebus has no AsyncMessageBus yet")
    if scenario == "S7":
        raise NotApplicable("S7 shares a bus between threads; the async bus is shared by tasks")
    if variant in ALONE.values():
        # structlog alone has no bus: its lines are written by sync code, once.
        raise NotApplicable("structlog alone is measured once, beside the sync bus")
    setup_name = logging_variant(variant)
    logs = configure_logs(setup_name)
    if scenario == "S8":
        from bench.impls import _allocation

        return _allocation.async_case("messagebus")
    cmd: Any = app.Allocate(ORDERID, SKU, QTY)
    registry = Registry()
    calls = 1
    bus: Any = None
    if scenario in ("S1", "S5"):
        registry.register(app.allocate_async, uow=False)
        calls = 0
    elif scenario == "S2":
        for handler in (app.on_placed_1_async, app.on_placed_2_async, app.on_placed_3_async):
            registry.register(handler, uow=False)
        cmd = app.OrderPlaced(ORDERID, SKU, QTY)
        calls = 3
    elif scenario == "S3":
        registry.register(app.allocate_and_emit_async, uow=False)
        registry.register(app.on_allocated_async, uow=False)
    elif scenario == "S4":
        from messagebus.testing import FakeAsyncUnitOfWork, InMemoryRepository

        registry.register(app.allocate_in_uow_async)
        registry.register(app.on_allocated_async, uow=False)
        products = InMemoryRepository(key=lambda p: p.sku, items=[app.Product(SKU)])
        bus = bus_type(registry, uow=lambda: FakeAsyncUnitOfWork(products=products))
    elif scenario == "S6":
        bus, cmd = _s6_bus(bus_type, int(variant or 100))
        calls = 0
    else:
        raise NotApplicable(f"no {scenario} for messagebus")
    if bus is None:
        bus = bus_type(registry)
    loop = asyncio.new_event_loop()

    def check() -> None:
        before = logs.lines()
        result = loop.run_until_complete(bus.handle(cmd))
        if scenario != "S2":
            expect(result, ORDERID, "await bus.handle(cmd)")
        if scenario in LINES_PER_OPERATION:
            logs.expect_lines(scenario, before)

    return Case(
        "await bus.handle(cmd)",
        {"bus": bus, "cmd": cmd},
        kind="async",
        loop=loop,
        tally=app.TALLY if calls else None,
        calls_per_op=calls,
        check=check,
        teardown=logs.teardown,
    )
