"""The allocation example's async entry point over HTTP: FastAPI on AsyncMessageBus,
served by uvicorn in a real server process, on SQLite (aiosqlite) and on
PostgreSQL (psycopg 3, async)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest

from allocation.entrypoints.server import ServerProcess

pytestmark = pytest.mark.e2e

ASGI_SERVER = "allocation.entrypoints.asgi_server"


@attrs.frozen
class Server:
    process: ServerProcess
    log: Path
    published: Path

    @property
    def url(self) -> str:
        return self.process.url

    def logged(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("e2e-async")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'allocation.sqlite3'}"  # served on aiosqlite
    else:
        create: Callable[[], str] = request.getfixturevalue("postgres_database_factory")
        url = create()
    log, published = folder / "server.log", folder / "published.jsonl"
    with (
        log.open("w") as log_file,
        ServerProcess(
            url,
            log=log_file,
            module=ASGI_SERVER,
            extra_args=["--publish-file", str(published)],
        ) as running,
    ):
        yield Server(running, log, published)
    assert 0 == running.returncode, log.read_text()
    # Stopped gracefully: the lifespan ran to its end (the engine was disposed of).
    events = [entry["event"] for entry in Server(running, log, published).logged()]
    assert "Application shutdown complete." in events


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
    assert (201, "OK") == call(
        server, "POST", "/add_batch", {"ref": ref, "sku": sku, "qty": qty, "eta": eta}
    )


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
    assert (404, {"message": f"No allocations for order {orderid}"}) == call(
        server, "GET", f"/allocations/{orderid}"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"orderid": "o1", "sku": "LAMP", "qty": "3"}, "qty"),
        ({"orderid": "o1", "sku": "LAMP", "qty": 1.5}, "qty"),
        ({"orderid": "o1", "sku": "LAMP"}, "qty"),
        ({"orderid": "o1", "sku": "LAMP", "qty": 3, "price": 1}, "price"),
        (None, "payload"),
    ],
)
def test_a_body_that_does_not_fit_is_a_400_naming_the_field(
    server: Server, body: Any, field: str
) -> None:
    status, answer = call(server, "POST", "/allocate", body)

    assert 400 == status
    assert field in answer["message"]


def test_concurrent_requests_share_the_one_bus_of_the_process(server: Server) -> None:
    skus = [random_name("sku") for _ in range(12)]
    for sku in skus:
        post_batch(server, f"{sku}-batch", sku, 10, None)

    def allocate(sku: str) -> tuple[int, Any]:
        return call(server, "POST", "/allocate", {"orderid": f"{sku}-order", "sku": sku, "qty": 1})

    with ThreadPoolExecutor(max_workers=len(skus)) as pool:
        answers = list(pool.map(allocate, skus))

    assert [(202, {"batchref": f"{sku}-batch"}) for sku in skus] == answers
    for sku in skus:
        assert (200, [{"sku": sku, "batchref": f"{sku}-batch"}]) == call(
            server, "GET", f"/allocations/{sku}-order"
        )
    published = [json.loads(line) for line in server.published.read_text().splitlines()]
    assert {f"{sku}-order" for sku in skus} <= {line["payload"]["orderid"] for line in published}


def test_the_server_logs_each_handled_message_as_a_json_line(server: Server) -> None:
    sku, orderid = random_name("sku"), random_name("order")
    post_batch(server, random_name("batch"), sku, 10, None)

    status, _ = call(server, "POST", "/allocate", {"orderid": orderid, "sku": sku, "qty": 1})

    assert 202 == status
    handled = {
        (entry["message_name"], entry["handler"])
        for entry in server.logged()
        if entry["event"] == "message_handled" and orderid in json.dumps(entry["payload"])
    }
    handlers = "allocation.service_layer.async_handlers"
    assert {
        ("allocation.Allocate", f"{handlers}.allocate"),
        ("allocation.Allocated", f"{handlers}.publish_allocated_event"),
        ("allocation.Allocated", f"{handlers}.add_allocation_to_read_model"),
    } == handled
