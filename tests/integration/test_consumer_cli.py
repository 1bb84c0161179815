"""``messagebus consume``, run in this process: it handles, stops on SIGTERM with a
summary, and says why it cannot start."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from messagebus import AsyncMessageBus, Metadata, Registry
from messagebus.cli import main
from messagebus.observe import InMemoryDeadLetters
from messagebus.sqlalchemy import AsyncSqlAlchemyUnitOfWork
from tests.servers import unique_name

from . import consumer_app as app
from .consumer_app import Reserve

pytestmark = pytest.mark.integration


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setenv("CONSUMER_TEST_DATABASE_URL", url)
    return url


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    app.TERMINATING.clear()
    while app.ENGINES:  # what the application of --app left open
        app.ENGINES.pop().dispose()


def consume(*arguments: str) -> int:
    return main(["consume", "--block", "0.01", "--claim-idle", "0", *arguments])


def test_consume_handles_until_sigterm_and_prints_a_summary(
    database: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = unique_name("cli")
    client = redis.Redis.from_url(redis_url)
    client.xadd(stream, app.fields(Reserve("o1")))
    client.xadd(stream, {"not": "a message"})
    client.xadd(stream, app.fields(Reserve("o2")))
    app.TERMINATING.add("o2")

    status = consume(
        "--app", "tests.integration.consumer_app:make_bus", "--group", "g", "--stream", stream,
        "--redis", redis_url, "--consumer", "one", "--batch", "5",
    )  # fmt: skip

    out = capsys.readouterr().out
    assert 0 == status
    assert f"consuming {stream} as one in g" in out
    assert "stopped: read 3, handled 2, dead letters 1, failed (left pending) 0" in out
    assert ["o1", "o2"] == app.handled(app.make_engine(database))
    assert 0 == int(client.xpending(stream, "g")["pending"])
    client.close()


def make_async_bus() -> AsyncMessageBus:
    import os

    registry = Registry()
    # No pool: the command ends without disposing the application's engine.
    engine = create_async_engine(os.environ["ASYNC_CONSUMER_TEST_DATABASE_URL"], poolclass=NullPool)
    factory = async_sessionmaker(engine, expire_on_commit=False)

    @registry.register
    async def reserve(cmd: Reserve, uow: AsyncSqlAlchemyUnitOfWork, metadata: Metadata) -> None:
        import signal

        await uow.claim_incoming(str(metadata.message_id), "reserve")
        os.kill(os.getpid(), signal.SIGTERM)

    return AsyncMessageBus(
        registry,
        uow=lambda: AsyncSqlAlchemyUnitOfWork(factory, inbox_table=app.INBOX),
        dead_letters=InMemoryDeadLetters(),
    )


def test_consume_runs_an_async_bus_on_asyncio(
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = tmp_path / "async.sqlite3"
    app.make_engine(f"sqlite:///{database}").dispose()
    monkeypatch.setenv("ASYNC_CONSUMER_TEST_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    monkeypatch.setenv("MESSAGEBUS_REDIS_URL", redis_url)
    stream = unique_name("cli")
    client = redis.Redis.from_url(redis_url)
    client.xadd(stream, app.fields(Reserve("o1")))

    status = consume(
        "--app", "tests.integration.test_consumer_cli:make_async_bus", "--group", "g",
        "--stream", stream,
    )  # fmt: skip

    assert 0 == status
    assert "stopped: read 1, handled 1, dead letters 0" in capsys.readouterr().out
    assert 0 == int(client.xpending(stream, "g")["pending"])
    client.close()
    asyncio.run(asyncio.sleep(0))  # the loop asyncio.run made is closed: none is left running


def make_bus_without_dead_letters() -> object:
    return app.build(sqlalchemy.create_engine("sqlite://"))  # never connected


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["--redis", "redis://127.0.0.1:1/0"], "cannot reach Redis at redis://127.0.0.1:1/0"),
        ([], "which Redis? give --redis URL (or MESSAGEBUS_REDIS_URL)"),
    ],
)
def test_consume_says_why_it_cannot_start(
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    problem: str,
) -> None:
    monkeypatch.delenv("MESSAGEBUS_REDIS_URL", raising=False)
    status = consume(
        "--app", "tests.integration.consumer_app:make_bus", "--group", "g", "--stream", "s",
        *arguments,
    )  # fmt: skip

    assert (2, f"messagebus: {problem}") == (
        status,
        capsys.readouterr().err.strip()[: len(problem) + 12],
    )


def test_consume_refuses_a_bus_without_a_dead_letter_store(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = consume(
        "--app", "tests.integration.test_consumer_cli:make_bus_without_dead_letters",
        "--group", "g", "--stream", unique_name("cli"), "--redis", redis_url,
    )  # fmt: skip

    assert 2 == status
    assert "a consumer needs a dead-letter store" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--batch", "0", "not a positive integer: '0'"),
        ("--max-deliveries", "x", "not a positive integer: 'x'"),
        ("--claim-idle", "-1", "not a number of seconds: '-1'"),
        ("--block", "nan", "not a number of seconds: 'nan'"),
    ],
)
def test_consume_refuses_bad_numbers_by_name(
    capsys: pytest.CaptureFixture[str], option: str, value: str, problem: str
) -> None:
    status = main(["consume", "--group", "g", "--stream", "s", option, value])

    assert 2 == status
    assert problem in capsys.readouterr().err
