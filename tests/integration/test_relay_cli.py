"""``messagebus relay`` and ``messagebus outbox``, against a real Redis and databases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from messagebus.cli import main
from messagebus.sqlalchemy import SqlAlchemyOutbox
from tests.servers import RedisServer, unique_name

from ._relay_helpers import message, read_stream, write

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[str, SqlAlchemyOutbox]]:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = sa.create_engine(url)
    outbox = SqlAlchemyOutbox(engine)  # the default table: messagebus_outbox
    outbox.create_table()
    yield url, outbox
    engine.dispose()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=60)  # blocking reads below
    yield client
    client.close()


def test_relay_once_publishes_what_is_pending_and_prints_a_summary(
    database: tuple[str, SqlAlchemyOutbox],
    redis_url: str,
    client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, outbox = database
    stream = unique_name("cli")
    write(outbox, [message(stream, "k", n) for n in range(3)])

    status = main(["relay", "--db", url, "--redis", redis_url, "--once"])

    assert 0 == status
    assert [("k", 0), ("k", 1), ("k", 2)] == read_stream(client, stream)
    assert "relay stopped: sent 3 in 1 batch;" in capsys.readouterr().out


def test_an_async_driver_in_the_url_is_replaced_by_its_sync_twin(
    database: tuple[str, SqlAlchemyOutbox], redis_url: str, client: redis.Redis
) -> None:
    url, outbox = database
    stream = unique_name("cli")
    write(outbox, [message(stream, "k", 1)])

    status = main(
        ["relay", "--db", url.replace("sqlite", "sqlite+aiosqlite"), "--redis", redis_url, "--once"]
    )

    assert (0, [("k", 1)]) == (status, read_stream(client, stream))


def test_the_urls_may_come_from_the_environment(
    database: tuple[str, SqlAlchemyOutbox],
    redis_url: str,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, outbox = database
    stream = unique_name("cli")
    write(outbox, [message(stream, "k", 1)])
    monkeypatch.setenv("MESSAGEBUS_DATABASE_URL", url)
    monkeypatch.setenv("MESSAGEBUS_REDIS_URL", redis_url)

    assert 0 == main(["relay", "--once", "--quiet"])
    assert [("k", 1)] == read_stream(client, stream)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--redis", "redis://127.0.0.1:1/0"], "which database? give --db URL"),
        (["--db", "DB"], "which Redis? give --redis URL"),
        (["--db", "not a url", "--redis", "redis://x"], "--db is not a database URL"),
        (["--db", "DB", "--redis", "http://x"], "--redis is not a Redis URL"),
        (["--db", "DB", "--table", "nope", "--redis", "redis://x"], "no outbox table 'nope'"),
        (["--db", "DB", "--app", "no_such_module:make", "--redis", "r"], "cannot import"),
    ],
)
def test_a_relay_that_cannot_start_says_why_and_exits_2(
    database: tuple[str, SqlAlchemyOutbox],
    arguments: list[str],
    error: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MESSAGEBUS_DATABASE_URL", raising=False)
    monkeypatch.delenv("MESSAGEBUS_REDIS_URL", raising=False)
    url, _ = database
    arguments = [url if argument == "DB" else argument for argument in arguments]

    assert 2 == main(["relay", *arguments, "--once"])
    assert error in capsys.readouterr().err


def test_relay_once_while_redis_is_down_exits_1_and_keeps_the_rows(
    database: tuple[str, SqlAlchemyOutbox],
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, outbox = database
    write(outbox, [message("s", "k", 1)])
    redis_server.stop()

    assert 1 == main(["relay", "--db", url, "--redis", redis_server.url, "--once", "--quiet"])
    assert "Redis" in capsys.readouterr().err
    assert 1 == outbox.pending()


def test_parked_rows_are_listed_and_retried(
    database: tuple[str, SqlAlchemyOutbox],
    redis_url: str,
    client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, outbox = database
    broken = unique_name("not-a-stream")
    client.set(broken, "a string")
    write(outbox, [message(broken, "k", 1)])
    parking = SqlAlchemyOutbox(outbox.engine, max_tries=1)
    claim = parking.claim(10)
    parking.finish(claim, [], {claim.entries[0].id: "ResponseError: WRONGTYPE"})
    capsys.readouterr()

    assert 0 == main(["outbox", "parked", "--db", url])
    listed = capsys.readouterr().out
    assert "Allocated v1 -> " in listed
    assert "1 parked row" in listed
    assert 0 == main(["outbox", "parked", "--db", url, "--json", "--limit", "5"])
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert ("k", 1, "ResponseError: WRONGTYPE") == (row["key"], row["tries"], row["last_error"])

    assert 1 == main(["outbox", "retry", "--db", url, "1", "99"])  # 99 is not parked
    assert "1 parked row back in line" in capsys.readouterr().out
    assert 2 == main(["outbox", "retry", "--db", url])  # neither ids nor --all
    assert 0 == main(["outbox", "retry", "--db", url, "--all"])
    assert "0 parked rows back in line" in capsys.readouterr().out
    assert 1 == outbox.pending()


def test_the_relay_process_relays_until_sigterm_then_stops_cleanly(
    database: tuple[str, SqlAlchemyOutbox], redis_url: str, client: redis.Redis
) -> None:
    url, outbox = database
    stream = unique_name("cli")
    write(outbox, [message(stream, "k", n) for n in range(5)])
    process = subprocess.Popen(
        [sys.executable, "-m", "messagebus.cli", "relay", "--db", url, "--redis", redis_url],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        last = "0-0"
        while len(read_stream(client, stream)) < 5:  # blocks on Redis, bounded
            found = client.xread({stream: last}, block=30_000)
            assert found, "the relay process published nothing"
            last = found[0][1][-1][0]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # pragma: no cover - only when the test failed
            process.kill()
            process.communicate()

    assert 0 == process.returncode, err
    assert "relay stopped: sent 5" in out
    assert [("k", n) for n in range(5)] == read_stream(client, stream)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--db", "mysql://u@127.0.0.1/x", "--redis", "redis://x"], "cannot use the database"),
        (
            ["--db", "postgresql+psycopg://postgres@127.0.0.1:1/x", "--redis", "redis://x"],
            "cannot reach the database",
        ),
    ],
)
def test_a_database_that_cannot_be_used_is_reported(
    arguments: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(["relay", *arguments, "--once"])
    assert error in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_batch_size_that_is_not_a_positive_number_is_refused(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(["relay", "--batch-size", value])
    assert "--batch-size" in capsys.readouterr().err


def test_progress_lines_never_show_a_password(
    database: tuple[str, SqlAlchemyOutbox],
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import messagebus._relay_cli

    monkeypatch.setattr(messagebus._relay_cli, "PROGRESS_EVERY", 0.0)  # a line a batch
    url, outbox = database
    stream = unique_name("cli")
    write(outbox, [message(stream, "k", n) for n in range(2)])
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("requirepass", "s3cret")  # a server of this test's own
    with_password = redis_server.url.replace("redis://", "redis://default:s3cret@")

    status = main(["relay", "--db", url, "--redis", with_password, "--once", "--batch-size", "1"])

    err = capsys.readouterr().err
    assert 0 == status
    assert "s3cret" not in err
    assert "redis://***@127.0.0.1" in err
    assert 2 == err.count("relay: sent")
    client.close()
