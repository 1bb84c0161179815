"""What the integration and end-to-end tests share: the example on sys.path, and
a real PostgreSQL server started for the test run (and Redis: tests/servers.py).

PostgreSQL: ``DATABASE_URL`` (a ``postgresql+psycopg://`` URL) when it is set;
otherwise a server of this run's own, from the PostgreSQL binaries on this
machine, on a free 127.0.0.1 port, stopped (and its files removed) at the end.
When none can be had, the tests that need it are skipped, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Redis, started like PostgreSQL below: the fixtures live with the server code.
from .servers import redis_server, redis_url  # noqa: F401

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "allocation"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))  # the example's package: import allocation


class PostgresUnavailable(Exception):
    """No PostgreSQL server could be started here."""


def _postgres_bin() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    raise PostgresUnavailable("no PostgreSQL binaries (initdb, postgres) were found")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """A throw-away PostgreSQL server: a child process of the test run."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        # initdb and postgres refuse to run as root: run them as 'postgres'.
        self.user = "postgres" if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="messagebus-pg-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = self.folder / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        if self.user is not None:
            os.chmod(self.folder, 0o755)
            shutil.chown(self.folder, self.user, self.user)
        initdb = subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.folder / "data"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            user=self.user,
            capture_output=True,
            check=False,
        )
        if initdb.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {initdb.stderr.decode()[-2000:]}")
        for _ in range(3):  # another process may take the free port first
            self.port = _free_port()
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    [
                        str(self.bin / "postgres"),
                        "-D",
                        str(self.folder / "data"),
                        "-p",
                        str(self.port),
                        "-k",
                        str(self.folder),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=200",
                    ],
                    user=self.user,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            if self._wait_until_ready(timeout=30):
                return
            self.stop()
        raise PostgresUnavailable(f"postgres did not start: {self._log_tail()}")

    def _wait_until_ready(self, timeout: float) -> bool:
        import psycopg

        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                psycopg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                    connect_timeout=2,
                ).close()  # fmt: skip
            except psycopg.OperationalError:
                time.sleep(0.05)
            else:
                return True
        return False

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected), then wait; kill if stuck."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL server's ``postgres`` database (SQLAlchemy, psycopg 3)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    server = None
    try:
        server = PostgresServer()
        server.start()
    except (PostgresUnavailable, OSError, LookupError) as exc:  # LookupError: no such user
        if server is not None:
            server.remove()
        message = f"PostgreSQL is not available: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server.url
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_database_factory(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Makes URLs of new, empty PostgreSQL schemas: each its own set of tables.

    One database is made for the run and dropped at its end; each URL names a
    new schema of it as its ``search_path`` (a schema costs a millisecond, a
    database a hundred and fifty).
    """
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_url)
    database = server.set(database=f"test_{uuid.uuid4().hex[:16]}")

    def conninfo(url: URL) -> str:
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    with psycopg.connect(conninfo(server), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database.database}"')

    def create() -> str:
        schema = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(conninfo(database), autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        url = database.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    yield create
    with psycopg.connect(conninfo(server), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database.database}" WITH (FORCE)')


@pytest.fixture
def postgres_database(postgres_database_factory: Callable[[], str]) -> str:
    """The URL of a new, empty PostgreSQL schema (in the run's own database)."""
    return postgres_database_factory()
