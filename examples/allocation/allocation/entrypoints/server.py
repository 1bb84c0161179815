"""Serve the web API with waitress, in this process or in a child process.

Waitress is a production WSGI server in pure Python: one process, a pool of
threads. That is the shape the bus is made for (one bus per process, shared
by every request thread), it runs everywhere Python does, and it stops
cleanly on SIGTERM or Ctrl-C.

Run it (from ``examples/allocation``)::

    python -m allocation.entrypoints.server --database-url sqlite:////tmp/allocation.db --port 5005

It prints one line, ``listening on http://HOST:PORT``, once it accepts
requests (``--port 0`` picks a free port); logs go to stderr as JSON lines.
:class:`ServerProcess` starts it as a child process and waits for that line,
which is what the demo and the end-to-end tests do.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import structlog

from allocation.adapters import orm
from allocation.adapters.notifications import FileNotifications, LogNotifications, Notifications
from allocation.adapters.publisher import FilePublisher, LogPublisher, Publish
from allocation.bootstrap import bootstrap
from allocation.domain import events
from allocation.entrypoints.flask_app import create_app
from messagebus import Serializer
from messagebus.logging import configure_logging

READY = "listening on "
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # examples/allocation


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly."""
    parser = argparse.ArgumentParser(description="Serve the allocation service.")
    parser.add_argument("--database-url", default=os.environ.get("ALLOCATION_DATABASE_URL"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5005)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--mail-file", type=Path, help="write notifications here, not to the log")
    parser.add_argument("--publish-file", type=Path, help="write published events here")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url (or set ALLOCATION_DATABASE_URL)")

    import waitress  # type: ignore[import-untyped]  # a dependency of this entry point only

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
    engine = orm.make_engine(args.database_url)
    try:
        orm.create_schema(engine)
        service = bootstrap(engine, notifications=notifications, publish=publish)
        server: Any = waitress.create_server(
            create_app(service), host=args.host, port=args.port, threads=args.threads
        )

        def stop(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(0)  # waitress's run() catches it and drains its threads

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        url = f"http://{server.effective_host}:{server.effective_port}"
        log.info("server_started", url=url, threads=args.threads)
        print(f"{READY}{url}", flush=True)
        server.run()
        server.close()
    finally:
        engine.dispose()
    log.info("server_stopped")


class ServerProcess:
    """The web API served by a child process, for the demo and the e2e tests.

    A context manager: it starts the server on a free loopback port, waits
    until it accepts requests, and at exit stops it (SIGTERM, then waits).

    Args:
        database_url: The database the server uses.
        log: Where the server's stderr (its logs) goes.
        extra_args: More command-line arguments for :func:`main`.
        timeout: Seconds to wait for the server to start.
        module: The server's module, run with ``python -m``: this one (waitress),
            or ``allocation.entrypoints.asgi_server`` (FastAPI on uvicorn), which
            takes the same arguments and prints the same line.
    """

    def __init__(
        self,
        database_url: str,
        *,
        log: IO[Any] | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = 30.0,
        module: str = "allocation.entrypoints.server",
    ) -> None:
        self.database_url = database_url
        self.module = module
        self.url = ""
        self._log = log
        self._args = [*extra_args]
        self._timeout = timeout
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.returncode: int | None = None

    def __enter__(self) -> ServerProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        command = [sys.executable, "-m", self.module]
        command += ["--database-url", self.database_url, "--port", "0", *self._args]
        self._process = process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        stdout = process.stdout
        lines: list[str] = []
        # A thread, so that waiting for the line can time out on every platform.
        self._reader = threading.Thread(target=lambda: lines.append(stdout.readline()))
        self._reader.start()
        self._reader.join(self._timeout)
        line = lines[0] if lines else ""
        if not line.startswith(READY):
            self._stop()
            raise RuntimeError(f"the server did not start (exit code {self.returncode}): {line!r}")
        self.url = line[len(READY) :].strip()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        finally:
            if self._reader is not None:
                self._reader.join()  # the child has exited: its stdout is at its end
            if process.stdout is not None:
                process.stdout.close()
            self.returncode = process.returncode
            self._process = None


if __name__ == "__main__":
    main()
