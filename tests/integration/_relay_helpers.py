"""What the outbox and relay tests share: databases, messages, and reading streams."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import redis
import sqlalchemy as sa

from messagebus.sqlalchemy import SqlAlchemyOutbox, outbox_table
from messagebus.transport import OutgoingMessage


def make_engine(kind: str, tmp_path: Path, postgres_database: Callable[[], str]) -> sa.Engine:
    """A new, empty database of ``kind`` ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        return sa.create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    return sa.create_engine(postgres_database(), pool_size=10)


def make_outbox(engine: sa.Engine, **options: object) -> SqlAlchemyOutbox:
    """An outbox store on a table of its own, created."""
    table = outbox_table(sa.MetaData())
    outbox = SqlAlchemyOutbox(engine, table=table, **options)  # type: ignore[arg-type]
    outbox.create_table()
    return outbox


def message(stream: str, key: str, number: int, *, name: str = "Allocated") -> OutgoingMessage:
    """A message whose payload numbers it: ``{"n": number}``."""
    return OutgoingMessage(
        message_id=str(uuid.uuid4()),
        name=name,
        version=1,
        payload=json.dumps({"n": number}),
        metadata=json.dumps({"message_id": "x"}),
        destination=stream,
        key=key,
    )


def write(outbox: SqlAlchemyOutbox, messages: Iterable[OutgoingMessage]) -> None:
    """Rows written as a unit of work writes them, outside one (no in-process wake-up)."""
    from messagebus.sqlalchemy._outbox import stage_statements

    messages = list(messages)
    with outbox.engine.begin() as connection:
        for statement, parameters in stage_statements(
            outbox.engine.dialect.name, outbox.table, messages
        ):
            connection.execute(statement, parameters)


def read_stream(client: redis.Redis, stream: str) -> list[tuple[str, int]]:
    """The entries of a stream, as (key, n) in stream order."""
    return [
        (fields[b"key"].decode(), json.loads(fields[b"payload"])["n"])
        for _, fields in client.xrange(stream)
    ]


def first_seen(entries: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
    """Per key, the numbers in the order they were first seen (what a consumer
    with an inbox handles: later copies are dropped)."""
    seen: set[tuple[str, int]] = set()
    order: dict[str, list[int]] = {}
    for entry in entries:
        if entry not in seen:
            seen.add(entry)
            order.setdefault(entry[0], []).append(entry[1])
    return order


def wait_for_listener(engine: sa.Engine) -> None:
    """Until the relay's connection listens on the outbox's channel."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND state = 'idle'"
    )
    with engine.connect() as connection:
        for _ in range(3000):
            if connection.execute(query).scalar_one():
                return
            connection.execute(sa.text("SELECT pg_sleep(0.01)"))
            connection.commit()  # pg_stat_activity is read once per transaction
    raise AssertionError("the relay never listened")
