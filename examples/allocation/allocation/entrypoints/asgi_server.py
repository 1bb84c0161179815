"""Serve the FastAPI web API with uvicorn: one process, one event loop, one bus.

Uvicorn is the usual production server for an ASGI application. Every request
is a task on the process's event loop, and every task shares the one
``AsyncMessageBus`` that the application's lifespan built at start-up; it
stops gracefully on SIGTERM or Ctrl-C (requests in flight finish, then the
lifespan disposes of the engine).

Run it (from ``examples/allocation``)::

    python -m allocation.entrypoints.asgi_server --database-url sqlite:////tmp/allocation.db

It takes the arguments of the waitress server (``server.py``) but
``--threads``, and prints the same line, ``listening on http://HOST:PORT``,
once it accepts requests, so that
``ServerProcess(url, module="allocation.entrypoints.asgi_server")`` starts it
for the end-to-end tests. Logs go to stderr as JSON lines, uvicorn's own too.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import structlog

from allocation.adapters.notifications import FileNotifications, LogNotifications, Notifications
from allocation.adapters.publisher import FilePublisher, LogPublisher, Publish
from allocation.domain import events
from allocation.entrypoints.fastapi_app import create_app, database_service
from allocation.entrypoints.server import READY
from messagebus import Serializer
from messagebus.logging import configure_logging


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    parser = argparse.ArgumentParser(description="Serve the allocation service (FastAPI).")
    parser.add_argument("--database-url", default=os.environ.get("ALLOCATION_DATABASE_URL"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5005)
    parser.add_argument("--mail-file", type=Path, help="write notifications here, not to the log")
    parser.add_argument("--publish-file", type=Path, help="write published events here")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url (or set ALLOCATION_DATABASE_URL)")

    import uvicorn  # a dependency of this entry point only

    # JSON lines on stderr, structlog's and the web server's records alike.
    configure_logging(json=True)
    log = structlog.get_logger("allocation.server")
    notifications: Notifications = (
        FileNotifications(args.mail_file) if args.mail_file else LogNotifications()
    )
    serializer = Serializer([events.Allocated])
    publish: Publish = (
        FilePublisher(args.publish_file, serializer)
        if args.publish_file
        else LogPublisher(serializer)
    )
    app = create_app(
        functools.partial(
            database_service, args.database_url, notifications=notifications, publish=publish
        )
    )
    # The socket is bound here, so that --port 0 gives a free port that we can print.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None))

    async def serve() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            log.info("server_started", url=url)
            print(f"{READY}{url}", flush=True)
        await serving

    def stopped(signum: int, frame: FrameType | None) -> None:
        # Uvicorn handles SIGTERM and SIGINT while it serves, shuts down gracefully,
        # then raises the signal again: here, where it means "exit, cleanly".
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGINT, stopped)
    try:
        asyncio.run(serve())
    except SystemExit:
        pass  # the signal again, after the graceful shut-down
    finally:
        sock.close()
    if not server.started:
        log.error("server_not_started")
        sys.exit(3)
    log.info("server_stopped")


if __name__ == "__main__":
    main()
