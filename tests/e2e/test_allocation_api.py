"""The allocation example over HTTP, against the web API served by a real server
process (waitress), on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from allocation.entrypoints.server import ServerProcess

pytestmark = pytest.mark.e2e


@attrs.frozen
class Server:
    process: ServerProcess
    log: Path

    @property
    def url(self) -> str:
        return self.process.url


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("e2e")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'allocation.sqlite3'}"
    else:
        create: Callable[[], str] = request.getfixturevalue("postgres_database_factory")
        url = create()
    log = folder / "server.log"
    with log.open("w") as log_file, ServerProcess(url, log=log_file) as running:
        yield Server(running, log)
    assert 0 == running.returncode, log.read_text()


def call(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, parse(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, parse(error.read())


def parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode()


def random_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def post_batch(server: Server, ref: str, sku: str, qty: int, eta: str | None) -> None:
    status, _ = call(server, "POST", "/add_batch", {"ref": ref, "sku": sku, "qty": qty, "eta": eta})
    assert 201 == status


def test_happy_path_allocates_to_the_earliest_batch_and_the_read_model_shows_it(
    server: Server,
) -> None:
    sku, othersku = random_name("sku"), random_name("sku-other")
    early, later, other = random_name("batch"), random_name("batch"), random_name("batch")
    post_batch(server, later, sku, 100, "2031-01-02")
    post_batch(server, early, sku, 100, "2031-01-01")
    post_batch(server, other, othersku, 100, None)
    orderid = random_name("order")

    assert (202, {"batchref": early}) == call(
        server, "POST", "/allocate", {"orderid": orderid, "sku": sku, "qty": 3}
    )
    assert (200, [{"sku": sku, "batchref": early}]) == call(
        server, "GET", f"/allocations/{orderid}"
    )


def test_unhappy_path_returns_400_and_the_error_message(server: Server) -> None:
    unknown_sku, orderid = random_name("sku"), random_name("order")

    assert (400, {"message": f"Invalid sku {unknown_sku}"}) == call(
        server, "POST", "/allocate", {"orderid": orderid, "sku": unknown_sku, "qty": 20}
    )
    status, _ = call(server, "GET", f"/allocations/{orderid}")
    assert 404 == status


def test_a_body_that_does_not_fit_is_a_400_naming_the_field(server: Server) -> None:
    status, answer = call(server, "POST", "/add_batch", {"ref": "b", "sku": "s", "qty": 1.5})

    assert 400 == status
    assert "qty" in answer["message"]


def test_the_server_logs_each_handled_message_as_a_json_line(server: Server) -> None:
    sku, orderid = random_name("sku"), random_name("order")
    post_batch(server, random_name("batch"), sku, 10, None)

    status, _ = call(server, "POST", "/allocate", {"orderid": orderid, "sku": sku, "qty": 1})

    assert 202 == status
    logged = [json.loads(line) for line in server.log.read_text().splitlines()]
    handled = {
        (entry["message_name"], entry["handler"].rsplit(".", 1)[-1])
        for entry in logged
        if entry["event"] == "message_handled" and orderid in json.dumps(entry["payload"])
    }
    assert {
        ("allocation.Allocate", "allocate"),
        ("allocation.Allocated", "publish_allocated_event"),
        ("allocation.Allocated", "add_allocation_to_read_model"),
    } == handled
