"""lato, set up as its README and documentation show.

Messages are lato's Command and Event (pydantic models); handlers are
registered with ``@app.handler``; ``app.execute(cmd)`` runs a command and
``app.publish(event)`` an event, each in a transaction context; a handler
raises an event with ``ctx.publish`` (during its own handling, depth first).
S4's unit of work opens and commits in lato's transaction-context hooks.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from lato import Application, Command, Event, TransactionContext
from pydantic import ConfigDict

from bench._api import S8_NOT_APPLICABLE, Case, NotApplicable, Tally, expect
from bench.impls._domain import ORDERID, QTY, SKU, product_class
from bench.impls._project import fake_unit_of_work

TALLY = Tally()
hit = TALLY.hit


def versions() -> dict[str, str]:
    return {"lato": version("lato"), "pydantic": version("pydantic")}


class Allocate(Command):
    orderid: str
    sku: str
    qty: int


class Allocated(Event):
    orderid: str
    sku: str
    qty: int


class OrderPlaced(Event):
    orderid: str
    sku: str
    qty: int


def allocate(cmd: Allocate) -> str:
    return cmd.orderid


def on_placed_1(event: OrderPlaced) -> None:
    hit()


def on_placed_2(event: OrderPlaced) -> None:
    hit()


def on_placed_3(event: OrderPlaced) -> None:
    hit()


def on_allocated(event: Allocated) -> None:
    hit()


def allocate_and_publish(cmd: Allocate, ctx: TransactionContext) -> str:
    ctx.publish(Allocated(orderid=cmd.orderid, sku=cmd.sku, qty=cmd.qty))
    return cmd.orderid


def _s4_app() -> Application:
    fake_uow, repository = fake_unit_of_work()
    products = repository(key=lambda p: p.sku, items=[product_class(Allocated)(SKU)])
    app = Application("bench")

    @app.on_enter_transaction_context
    def begin(ctx: TransactionContext) -> None:
        ctx.set_dependencies(uow=fake_uow(products=products))

    @app.on_exit_transaction_context
    def end(ctx: TransactionContext, exception: Exception | None = None) -> None:
        uow = ctx["uow"]
        try:
            if exception is not None:
                uow.rollback()
                return
            uow.commit()
            events = uow.collect_new_events()
        finally:
            uow.close()
        for event in events:
            ctx.publish(event)

    def allocate_in_uow(cmd: Allocate, uow: Any) -> str:
        product = uow.products.get(cmd.sku)
        product.allocate(cmd.orderid, cmd.qty)
        return cmd.orderid

    app.handler(Allocate)(allocate_in_uow)
    app.handler(Allocated)(on_allocated)
    return app


def _s6_app(count: int) -> tuple[Application, Any]:
    # defer_build: pydantic builds a type's schema when it is first used, not
    # when it is made (ten thousand schemas would take seconds to set up).
    deferred = ConfigDict(defer_build=True)
    types = [
        type(f"Ping{i}", (Allocate,), {"__module__": __name__, "model_config": deferred})
        for i in range(count)
    ]
    app = Application("bench")
    for message_type in types:
        app.handler(message_type)(allocate)
    return app, types[count // 2](orderid=ORDERID, sku=SKU, qty=QTY)


def setup(scenario: str, variant: str | None) -> Case:
    app = Application("bench")
    cmd: Any = Allocate(orderid=ORDERID, sku=SKU, qty=QTY)
    stmt = "app.execute(cmd)"
    calls = 1
    if scenario == "S1":
        app.handler(Allocate)(allocate)
        calls = 0
    elif scenario == "S2":
        for handler in (on_placed_1, on_placed_2, on_placed_3):
            app.handler(OrderPlaced)(handler)
        cmd = OrderPlaced(orderid=ORDERID, sku=SKU, qty=QTY)
        stmt = "app.publish(cmd)"
        calls = 3
    elif scenario in ("S3", "S7"):
        app.handler(Allocate)(allocate_and_publish)
        app.handler(Allocated)(on_allocated)
    elif scenario == "S4":
        app = _s4_app()
    elif scenario == "S6":
        app, cmd = _s6_app(int(variant or 100))
        calls = 0
    elif scenario == "S8":
        raise NotApplicable(S8_NOT_APPLICABLE)
    else:
        raise NotApplicable(
            "no per-handler structured logs (it logs transaction begin and end "
            "at DEBUG through the standard library, without the payload)"
        )
    namespace = {"app": app, "cmd": cmd}

    def check() -> None:
        result = eval(stmt, namespace)
        if scenario != "S2":
            expect(result, ORDERID, stmt)

    return Case(
        stmt,
        namespace,
        kind="threads" if scenario == "S7" else "sync",
        threads=8,
        tally=TALLY if calls else None,
        calls_per_op=calls,
        check=check,
    )
