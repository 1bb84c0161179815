"""The web API on FastAPI, over one ``AsyncMessageBus`` per process.

The same API as the Flask one (``flask_app.py``)::

    POST /add_batch              {"ref", "sku", "qty", "eta"?}  -> 201
    POST /allocate               {"orderid", "sku", "qty"}      -> 202 {"batchref"}
                                 an unknown sku                 -> 400 {"message"}
    GET  /allocations/{orderid}  the read model                 -> 200 [{"sku", "batchref"}]
                                 no allocation for the order    -> 404

The bus is built once, in the application's lifespan (at start-up, before the
first request; the engine is disposed of at shut-down), and every request
shares it: each ``handle()`` keeps its state to itself, and each handler
attempt has its own unit of work and session. Request bodies become commands
through the bus's serializer, as in the Flask app, so that a body that does
not fit is the same 400 naming the field.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from allocation.adapters import orm
from allocation.adapters.notifications import Notifications
from allocation.adapters.publisher import Publish
from allocation.bootstrap import AsyncService, bootstrap_async
from allocation.domain import commands
from allocation.service_layer.handlers import InvalidSku
from messagebus import Command, InvalidMessageDataError

C = TypeVar("C", bound=Command[Any])

#: Makes the service when the application starts, and cleans up when it stops.
StartService = Callable[[], AbstractAsyncContextManager[AsyncService]]


def _service(request: Request) -> AsyncService:
    service: AsyncService = request.state.service
    return service


#: The service that the lifespan built, as a route's parameter.
LifespanService = Annotated[AsyncService, Depends(_service)]


def create_app(start: StartService) -> FastAPI:
    """A FastAPI application that serves the service; build it once per process.

    Args:
        start: Called once, when the application starts: an async context
            manager whose value is the service (see :func:`database_service`;
            for a service built over fakes, ``lambda: contextlib.nullcontext(service)``).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with start() as service:
            yield {"service": service}  # request.state.service, in every request

    app = FastAPI(title="allocation", lifespan=lifespan)

    @app.exception_handler(InvalidMessageDataError)
    async def invalid_request(request: Request, error: InvalidMessageDataError) -> JSONResponse:
        return JSONResponse({"message": str(error), "errors": list(error.errors)}, 400)

    @app.exception_handler(InvalidSku)
    async def invalid_sku(request: Request, error: InvalidSku) -> JSONResponse:
        return JSONResponse({"message": str(error)}, 400)

    @app.post("/add_batch", status_code=201, response_class=PlainTextResponse)
    async def add_batch(request: Request, service: LifespanService) -> str:
        await service.bus.handle(await command_from(request, service, commands.CreateBatch))
        return "OK"

    @app.post("/allocate", status_code=202)
    async def allocate(request: Request, service: LifespanService) -> dict[str, str | None]:
        batchref = await service.bus.handle(await command_from(request, service, commands.Allocate))
        return {"batchref": batchref}

    @app.get("/allocations/{orderid}", response_model=None)
    async def allocations(
        orderid: str, service: LifespanService
    ) -> list[dict[str, str]] | JSONResponse:
        result = await service.views.for_order(orderid)
        if not result:
            return JSONResponse({"message": f"No allocations for order {orderid}"}, 404)
        return result

    return app


async def command_from(request: Request, service: AsyncService, command_type: type[C]) -> C:
    """The command that the request's JSON body describes, checked strictly."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None  # as Flask's get_json(silent=True): the serializer says what is wrong
    return service.bus.serializer.load(command_type, body)


@contextlib.asynccontextmanager
async def database_service(
    database_url: str,
    *,
    notifications: Notifications | None = None,
    publish: Publish | None = None,
) -> AsyncIterator[AsyncService]:
    """The service on a database, for :func:`create_app`: at start-up, an async
    engine, the tables (a real service would migrate) and the bus; at shut-down,
    the engine is disposed of."""
    engine = orm.make_async_engine(database_url)
    try:
        await orm.create_schema_async(engine)
        yield bootstrap_async(engine, notifications=notifications, publish=publish)
    finally:
        await engine.dispose()
