"""The allocation example's web API (Flask's test client), over the fake unit of work."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from allocation.bootstrap import Service, bootstrap
from allocation.entrypoints.flask_app import create_app


@pytest.fixture
def client(service: Service) -> FlaskClient:
    return create_app(service).test_client()


def post(client: FlaskClient, path: str, body: Any) -> tuple[int, Any]:
    response = client.post(path, json=body)
    return response.status_code, response.get_json()


def test_add_batch_then_allocate_then_read_the_allocations(client: FlaskClient) -> None:
    batch = {"ref": "b1", "sku": "LAMP", "qty": 10, "eta": "2031-01-02"}
    assert 201 == client.post("/add_batch", json=batch).status_code

    assert (202, {"batchref": "b1"}) == post(
        client, "/allocate", {"orderid": "o1", "sku": "LAMP", "qty": 3}
    )
    response = client.get("/allocations/o1")
    assert (200, [{"sku": "LAMP", "batchref": "b1"}]) == (
        response.status_code,
        response.get_json(),
    )


def test_an_unknown_sku_is_a_400_with_the_message(client: FlaskClient) -> None:
    assert (400, {"message": "Invalid sku NOPE"}) == post(
        client, "/allocate", {"orderid": "o1", "sku": "NOPE", "qty": 3}
    )


def test_an_order_without_allocations_is_a_404(client: FlaskClient) -> None:
    response = client.get("/allocations/unknown-order")

    assert 404 == response.status_code
    assert "unknown-order" in response.get_json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"orderid": "o1", "sku": "LAMP", "qty": "3"}, "qty"),
        ({"orderid": "o1", "sku": "LAMP"}, "qty"),
        ({"orderid": "o1", "sku": "LAMP", "qty": 3, "price": 1}, "price"),
        (None, "payload"),
    ],
)
def test_a_body_that_does_not_fit_the_command_is_a_400_naming_the_field(
    client: FlaskClient, body: Any, field: str
) -> None:
    status, answer = post(client, "/allocate", body)

    assert 400 == status
    assert field in answer["message"]


def test_bootstrap_needs_an_engine_unless_given_a_unit_of_work_and_views() -> None:
    with pytest.raises(TypeError, match="needs an engine"):
        bootstrap()
