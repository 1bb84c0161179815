"""Real Redis servers for the tests: children of the test run, on loopback.

``redis_url`` (session): ``REDIS_URL`` when it is set; otherwise a
``redis-server`` of this run's own (the Debian package: on ``PATH`` or
``/usr/bin/redis-server``) on a free 127.0.0.1 port, stopped and its files
removed at the end. Tests that share it use streams and groups of their own
names (``unique_name``).

``redis_server`` (per test): a server of the test's own, which the test may
stop, kill and start again on the same port (``restart``) to show what happens
while Redis is down or after it crashed. It writes every command to its
append-only file before answering, so a restart keeps what it acknowledged.

When no server can be had, the tests that need one are skipped, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "RedisServer",
    "RedisUnavailable",
    "redis_server",
    "redis_url",
    "unique_name",
]


class RedisUnavailable(Exception):
    """No Redis server could be started here."""


def _redis_binary() -> Path:
    found = shutil.which("redis-server")
    for candidate in (found, "/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    raise RedisUnavailable("no redis-server binary was found (apt-get install redis-server)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    """A bare RESP PING: no client library is needed to know the server is up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def unique_name(prefix: str = "test") -> str:
    """A stream or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class RedisServer:
    """A throw-away Redis server: a child process of the test run.

    Args:
        durable: Log every write to an append-only file, fsynced before the
            reply, so that a restart (even after ``kill``) keeps what the
            server acknowledged. Off for the shared server: faster.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.binary = _redis_binary()
        self.durable = durable
        self.folder = Path(tempfile.mkdtemp(prefix="messagebus-redis-"))
        self.log = self.folder / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.durable
            else ["--appendonly", "no"]
        )
        return [
            str(self.binary),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.folder),
            "--save",
            "",
            *persistence,
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]

    def start(self) -> None:
        """Start on a free port (the port of a previous start, if there was one)."""
        ports = [self.port] * 3 if self.port else [_free_port() for _ in range(3)]
        for port in ports:  # another process may take a free port first
            self.port = port
            self._spawn()
            if self._wait_until_ready(timeout=20):
                return
            self.stop()
        raise RedisUnavailable(f"redis-server did not start: {self._log_tail()}")

    def _spawn(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def _wait_until_ready(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _answers_ping(self.port):
                return True
            time.sleep(0.02)
        return False

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), then wait; kill if stuck."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """A crash: SIGKILL, nothing flushed but what was already written."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _started(*, durable: bool) -> RedisServer:
    """A started server, or the test skipped (failed under ``CI=true``)."""
    server = None
    try:
        server = RedisServer(durable=durable)
        server.start()
    except (RedisUnavailable, OSError) as exc:
        if server is not None:
            server.remove()
        message = f"Redis is not available: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a Redis server shared by the run (``redis://127.0.0.1:PORT/0``)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = _started(durable=False)
    try:
        yield server.url
    finally:
        server.remove()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A durable Redis server of this test's own, to stop, kill and restart."""
    server = _started(durable=True)
    try:
        yield server
    finally:
        server.remove()
