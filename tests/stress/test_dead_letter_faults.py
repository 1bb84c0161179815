"""Dead letters under random faults: 4 threads send 50 events each, whose handler always
fails, while 30% of the store's inserts fail at random (transient) and, for a stretch, every
insert fails (an outage longer than the store's retries). The run ends with every
letter in the table, each once: written, retried, or spooled and imported back."""

from __future__ import annotations

import random
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa
import structlog

from messagebus import Event, MessageBus, Registry, RetryPolicy
from messagebus.dead_letters import import_dead_letters
from messagebus.sqlalchemy._dead_letters import SqlAlchemyDeadLetterStore

THREADS = 4
EVENTS_PER_THREAD = 50


@attrs.frozen
class Paid(Event):
    order: str


def test_every_dead_letter_ends_in_the_table_once_under_random_write_faults(
    tmp_path: Path,
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    chance = random.Random(16)
    lock = threading.Lock()
    outage = threading.Event()
    faults = {"transient": 0}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def fault(*args: Any) -> None:
        if not args[2].startswith("INSERT"):
            return
        with lock:
            failing = outage.is_set() or chance.random() < 0.3
            faults["transient"] += failing
        if failing:
            raise sqlite3.OperationalError("disk I/O error")

    spool = tmp_path / "spool"
    store = SqlAlchemyDeadLetterStore(engine, spool=spool, sleep=lambda _: None)
    store.create_table()
    registry = Registry()

    @registry.register(uow=False)
    def receipt(event: Paid) -> None:
        raise ConnectionRefusedError("the mail server is down")

    bus = MessageBus(
        registry,
        logger=structlog.wrap_logger(structlog.ReturnLogger(), processors=[]),
        dead_letters=store,
        retry=RetryPolicy.no_retries(),
    )

    def send(thread: int) -> None:
        for n in range(EVENTS_PER_THREAD):
            if thread == 0 and n == EVENTS_PER_THREAD // 4:
                outage.set()
            if thread == 0 and n == EVENTS_PER_THREAD // 2:
                outage.clear()
            bus.handle(Paid(f"t{thread}-{n:03}"))

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(send, range(THREADS)))
    spooled = len(spool.read_text().splitlines()) if spool.exists() else 0
    report = import_dead_letters(store, spool, serializer=bus.serializer) if spooled else None

    sent = sorted(f"t{t}-{n:03}" for t in range(THREADS) for n in range(EVENTS_PER_THREAD))
    stored = sorted(s.letter.payload["order"] for s in store.list())
    assert sent == stored
    assert spooled > 0
    assert report is not None
    assert spooled == report.imported
    assert faults["transient"] > 0
    engine.dispose()
