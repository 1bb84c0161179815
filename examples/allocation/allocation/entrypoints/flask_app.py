"""The web API, on Flask, over the one bus that :func:`bootstrap` built.

    POST /add_batch              {"ref", "sku", "qty", "eta"?}  -> 201
    POST /allocate               {"orderid", "sku", "qty"}      -> 202 {"batchref"}
                                 an unknown sku                 -> 400 {"message"}
    GET  /allocations/<orderid>  the read model                 -> 200 [{"sku", "batchref"}]
                                 no allocation for the order    -> 404

Request bodies become commands through the bus's serializer, which checks
them strictly: a body that does not fit the command is a 400 naming the field.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from allocation import views
from allocation.bootstrap import Service
from allocation.domain import commands
from allocation.service_layer.handlers import InvalidSku
from messagebus import Command, InvalidMessageDataError

C = TypeVar("C", bound=Command[Any])


def create_app(service: Service) -> Flask:
    """A Flask application that serves the service; build it once per process."""
    app = Flask("allocation")
    bus = service.bus
    serializer = bus.serializer

    def command_from_request(command_type: type[C]) -> C:
        return serializer.load(command_type, request.get_json(silent=True))

    @app.errorhandler(InvalidMessageDataError)
    def invalid_request(error: InvalidMessageDataError) -> ResponseReturnValue:
        return {"message": str(error), "errors": list(error.errors)}, 400

    @app.errorhandler(InvalidSku)
    def invalid_sku(error: InvalidSku) -> ResponseReturnValue:
        return {"message": str(error)}, 400

    @app.post("/add_batch")
    def add_batch() -> ResponseReturnValue:
        bus.handle(command_from_request(commands.CreateBatch))
        return "OK", 201

    @app.post("/allocate")
    def allocate() -> ResponseReturnValue:
        batchref = bus.handle(command_from_request(commands.Allocate))
        return {"batchref": batchref}, 202

    @app.get("/allocations/<orderid>")
    def allocations(orderid: str) -> ResponseReturnValue:
        result = views.allocations(orderid, service.views)
        if not result:
            return {"message": f"No allocations for order {orderid}"}, 404
        return jsonify(result), 200

    return app
