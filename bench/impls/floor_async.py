"""The floor of the async scenarios: the handlers' coroutines awaited directly.

S8's is the allocation example's transactions written by hand with an
``AsyncSession`` (``bench/impls/_allocation.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench._api import Case, NotApplicable
from bench.impls import _mbapp as app
from bench.impls._domain import ORDERID, QTY, SKU
from bench.impls.floor import Emitter
from bench.impls.messagebus import versions as project_versions
from messagebus.testing import FakeAsyncUnitOfWork, InMemoryRepository

_S3 = """
context = Emitter()
result = await allocate_and_emit_async(cmd, context)
for event in context.events:
    await on_allocated_async(event)
"""

_S4 = """
uow = make_uow()
try:
    result = await allocate_in_uow_async(cmd, uow)
    await uow.commit()
    events = uow.collect_new_events()
except BaseException:
    await uow.rollback()
    raise
finally:
    await uow.close()
for event in events:
    await on_allocated_async(event)
"""


def versions() -> dict[str, str]:
    return project_versions()


def setup(scenario: str, variant: str | None) -> Case:
    if scenario == "S8":
        # The allocation example's transactions written by hand with an AsyncSession.
        from bench.impls import _allocation

        return _allocation.async_case("hand-written")
    namespace: dict[str, Any] = vars(app).copy()
    namespace.update(cmd=app.Allocate(ORDERID, SKU, QTY), Emitter=Emitter)
    loop = asyncio.new_event_loop()
    if scenario in ("S1", "S5", "S6"):
        stmt, calls = "await allocate_async(cmd)", 0
    elif scenario == "S2":
        namespace["event"] = app.OrderPlaced(ORDERID, SKU, QTY)
        stmt = (
            "await on_placed_1_async(event)\n"
            "await on_placed_2_async(event)\n"
            "await on_placed_3_async(event)"
        )
        calls = 3
    elif scenario == "S3":
        stmt, calls = _S3, 1
    elif scenario == "S4":
        products = InMemoryRepository(key=lambda p: p.sku, items=[app.Product(SKU)])
        namespace["make_uow"] = lambda: FakeAsyncUnitOfWork(products=products)
        stmt, calls = _S4, 1
    else:
        raise NotApplicable(f"no async floor for {scenario}")
    tally = app.TALLY if calls else None
    return Case(stmt, namespace, kind="async", loop=loop, tally=tally, calls_per_op=calls)
