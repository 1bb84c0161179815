"""The allocation service end to end: ``make demo`` (or ``python examples/allocation/demo.py``).

Starts the web API as a server process on a free loopback port, over a
SQLite database in a temporary folder; drives a happy path and an unhappy
path over HTTP, printing each exchange; stops the server and shows what it
e-mailed (to a file: the example never sends mail) and published.
Exits non-zero if any answer is not the expected one.

With ``--async``, the same against the async entry point: FastAPI on
``AsyncMessageBus``, served by uvicorn (the database on aiosqlite).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from allocation.entrypoints.server import ServerProcess


class Client:
    """A tiny JSON client on urllib, which prints every exchange."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.unexpected = 0

    def call(self, method: str, path: str, expected: int, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                status, raw = error.code, error.read()
        text = raw.decode()
        try:
            answer: Any = json.loads(text)
        except ValueError:
            answer = text
        mark = "ok " if status == expected else "UNEXPECTED"
        if status != expected:
            self.unexpected += 1
        sent = "" if body is None else " " + json.dumps(body)
        print(f"  {mark} {method} {path}{sent}")
        print(f"       -> {status} {json.dumps(answer)}")
        return answer


SERVERS = {
    False: (
        "allocation.entrypoints.server",
        "waitress, one process, one bus shared by its threads",
    ),
    True: (
        "allocation.entrypoints.asgi_server",
        "FastAPI on uvicorn, one process, one async bus shared by its tasks",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The allocation service, end to end.")
    parser.add_argument(
        "--async", dest="use_async", action="store_true", help="serve the async entry point"
    )
    module, description = SERVERS[parser.parse_args(argv).use_async]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="allocation-demo-") as folder:
        root = Path(folder)
        database_url = f"sqlite:///{root / 'allocation.sqlite3'}"
        mail, published, log = root / "mail.jsonl", root / "published.jsonl", root / "server.log"
        print(f"Database: {database_url}")
        with (
            log.open("w") as log_file,
            ServerProcess(
                database_url,
                log=log_file,
                extra_args=["--mail-file", str(mail), "--publish-file", str(published)],
                module=module,
            ) as server,
        ):
            print(f"Server: {server.url} ({description})")
            api = Client(server.url)

            print("\nHappy path: two batches of a table, then an order that gets the earlier one")
            api.call(
                "POST",
                "/add_batch",
                201,
                {"ref": "batch-late", "sku": "SMALL-TABLE", "qty": 10, "eta": "2031-01-02"},
            )
            api.call(
                "POST",
                "/add_batch",
                201,
                {"ref": "batch-now", "sku": "SMALL-TABLE", "qty": 10, "eta": None},
            )
            api.call(
                "POST", "/allocate", 202, {"orderid": "order-1", "sku": "SMALL-TABLE", "qty": 3}
            )
            api.call("GET", "/allocations/order-1", 200)
            print("\nAn order that no batch can take: out of stock, an e-mail is sent")
            api.call(
                "POST", "/allocate", 202, {"orderid": "order-2", "sku": "SMALL-TABLE", "qty": 50}
            )

            print("\nUnhappy path")
            api.call(
                "POST", "/allocate", 400, {"orderid": "order-3", "sku": "NO-SUCH-SKU", "qty": 1}
            )
            api.call("GET", "/allocations/order-404", 404)
            api.call(
                "POST",
                "/allocate",
                400,
                {"orderid": "order-4", "sku": "SMALL-TABLE", "qty": "three"},
            )
        print(f"\nServer stopped (exit code {server.returncode}).")
        print("\nE-mails it would have sent (written to a file, never mailed):")
        for line in _lines(mail):
            print(f"  {line}")
        print("\nEvents it published:")
        for line in _lines(published):
            print(f"  {line}")
        handled = sum('"event": "message_handled"' in line for line in _lines(log))
        print(f"\nThe server logged {handled} handled messages (JSON lines on its stderr).")
    elapsed = time.perf_counter() - started
    failed = api.unexpected + (server.returncode != 0)
    print(f"\nDone in {elapsed:.1f} s: " + ("all as expected." if not failed else "FAILED."))
    return 1 if failed else 0


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


if __name__ == "__main__":
    sys.exit(main())
