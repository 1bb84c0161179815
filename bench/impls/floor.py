"""The floor: the scenarios' handler functions called directly, plumbing written by hand.

S8's floor is the allocation example's transactions written by hand with
SQLAlchemy (``bench/impls/_allocation.py``).
"""

from __future__ import annotations

from typing import Any

from bench._api import Case, Kind, NotApplicable, expect
from bench.impls import _mbapp as app
from bench.impls._domain import ORDERID, QTY, SKU
from bench.impls.messagebus import versions as project_versions
from messagebus.testing import FakeUnitOfWork, InMemoryRepository


def versions() -> dict[str, str]:
    return project_versions()


class Emitter:
    """What the S3 handler asks of its context, done by hand: collect the events."""

    __slots__ = ("emit", "events")

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.emit = self.events.append


# S3 by hand: the command handler, then the handler of each event it raised.
_S3 = """
context = Emitter()
result = allocate_and_emit(cmd, context)
for event in context.events:
    on_allocated(event)
"""

# S4 by hand: what the bus does around a handler attempt with a unit of work.
_S4 = """
uow = make_uow()
try:
    result = allocate_in_uow(cmd, uow)
    uow.commit()
    events = uow.collect_new_events()
except BaseException:
    uow.rollback()
    raise
finally:
    uow.close()
for event in events:
    on_allocated(event)
"""


def setup(scenario: str, variant: str | None) -> Case:
    cmd = app.Allocate(ORDERID, SKU, QTY)
    namespace: dict[str, Any] = vars(app).copy()
    namespace.update(cmd=cmd, Emitter=Emitter)
    if scenario in ("S1", "S5", "S6"):

        def check() -> None:
            expect(app.allocate(cmd), ORDERID, "allocate(cmd)")

        return Case("allocate(cmd)", namespace, check=check)
    if scenario == "S2":
        namespace["event"] = app.OrderPlaced(ORDERID, SKU, QTY)
        stmt = "on_placed_1(event)\non_placed_2(event)\non_placed_3(event)"
        return Case(stmt, namespace, tally=app.TALLY, calls_per_op=3)
    if scenario in ("S3", "S7"):
        threads = 8 if scenario == "S7" else 1
        kind: Kind = "threads" if scenario == "S7" else "sync"
        return Case(_S3, namespace, kind=kind, threads=threads, tally=app.TALLY, calls_per_op=1)
    if scenario == "S4":
        products = InMemoryRepository(key=lambda p: p.sku, items=[app.Product(SKU)])
        namespace["make_uow"] = lambda: FakeUnitOfWork(products=products)
        return Case(_S4, namespace, tally=app.TALLY, calls_per_op=1)
    if scenario == "S8":
        # The allocation example's transactions written by hand with SQLAlchemy.
        from bench.impls import _allocation

        return _allocation.case("hand-written")
    raise NotApplicable(f"no floor for {scenario}")
