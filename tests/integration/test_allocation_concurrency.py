"""Many threads allocate against one product at once, through one shared bus, on PostgreSQL.

Every allocation changes the same aggregate, so concurrent attempts conflict:
a stale version (``StaleDataError``, at READ COMMITTED) or a serialisation
failure (SQLSTATE 40001, at REPEATABLE READ, the example's level). The bus
retries both as transient failures. The policy is the default one
(``retry_if_transient``) with more attempts and a small jittered wait, as a
hot aggregate needs: a full-jitter exponential wait,
``wait_random_exponential(multiplier=0.005, max=0.1)``, and a generous
``stop_after_attempt(MAX_ATTEMPTS)``. The bus is given a sleep that records the
wait it was asked for and returns, so the retries do not sleep for real (8
contenders then make about 200 retries in all).
"""

from __future__ import annotations

import collections
import datetime
import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy
import structlog
import tenacity

from allocation.adapters import orm
from allocation.bootstrap import Service, bootstrap
from allocation.domain import commands, events
from messagebus import Event, RetryPolicy

pytestmark = pytest.mark.integration

THREADS = 8
LINES_PER_THREAD = 6
QTY = 2
# 48 lines of 2 (96 units) for 70 units of stock: 35 lines fit, 13 are out of stock.
BATCHES = [("now", 40, None), ("soon", 30, datetime.date(2031, 1, 1))]
# Every conflict has a winner, so the threads always progress; this only bounds
# the retries of one unlucky command (without real waits, it has needed up to 33).
MAX_ATTEMPTS = 200
WAIT_MAX = 0.1


class Recorder:
    """Notifications and publishing, recorded (from many threads)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.published: list[Event] = []

    def send(self, destination: str, message: str) -> None:
        self.sent.append(message)

    def publish(self, channel: str, event: Event) -> None:
        self.published.append(event)


class Waits:
    """The bus's sleep: records each wait it is asked for (from many threads), and returns."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


@pytest.fixture(params=["REPEATABLE READ", "READ COMMITTED"])
def engine(request: pytest.FixtureRequest, postgres_database: str) -> Iterator[sqlalchemy.Engine]:
    engine = orm.make_engine(
        postgres_database, isolation_level=request.param, pool_size=THREADS * 2
    )
    orm.create_schema(engine)
    orm.start_mappers()
    yield engine
    engine.dispose()


def make_service(engine: sqlalchemy.Engine, recorder: Recorder, waits: Waits) -> Service:
    return bootstrap(
        engine,
        notifications=recorder,
        publish=recorder.publish,
        retry=RetryPolicy(
            stop=tenacity.stop_after_attempt(MAX_ATTEMPTS),
            wait=tenacity.wait_random_exponential(multiplier=0.005, max=WAIT_MAX),
        ),
        sleep=waits,
    )


def add_batches(service: Service, sku: str) -> None:
    for name, qty, eta in BATCHES:
        service.bus.handle(commands.CreateBatch(f"{sku}-{name}", sku, qty, eta))


def allocations_by_batch(engine: sqlalchemy.Engine, sku: str) -> dict[str, tuple[int, int]]:
    """batch name -> (allocated quantity, allocated lines), from the write model."""
    b, lines, a = orm.batches, orm.order_lines, orm.allocations
    query = (
        sqlalchemy.select(b.c.reference, sqlalchemy.func.sum(lines.c.qty), sqlalchemy.func.count())
        .select_from(a.join(b, a.c.batch_id == b.c.id).join(lines, a.c.orderline_id == lines.c.id))
        .where(b.c.sku == sku)
        .group_by(b.c.reference)
    )
    with engine.connect() as connection:
        return {
            ref.removeprefix(f"{sku}-"): (int(qty), count)
            for ref, qty, count in connection.execute(query)
        }


def allocated_lines(engine: sqlalchemy.Engine, sku: str) -> list[tuple[str, str]]:
    """(orderid, batch reference) of every allocation, from the write model."""
    b, lines, a = orm.batches, orm.order_lines, orm.allocations
    query = (
        sqlalchemy.select(lines.c.orderid, b.c.reference)
        .select_from(a.join(b, a.c.batch_id == b.c.id).join(lines, a.c.orderline_id == lines.c.id))
        .where(b.c.sku == sku)
    )
    with engine.connect() as connection:
        return [(orderid, ref) for orderid, ref in connection.execute(query)]


def read_model(engine: sqlalchemy.Engine, sku: str) -> list[tuple[str, str]]:
    view = orm.allocations_view
    query = sqlalchemy.select(view.c.orderid, view.c.batchref).where(view.c.sku == sku)
    with engine.connect() as connection:
        return [(orderid, ref) for orderid, ref in connection.execute(query)]


def test_concurrent_allocations_end_as_a_serial_run_does(
    engine: sqlalchemy.Engine, record_property: Callable[[str, object], None]
) -> None:
    orderids = [f"t{t}-o{i}" for t in range(THREADS) for i in range(LINES_PER_THREAD)]

    serial = Recorder()
    service = make_service(engine, serial, Waits())
    add_batches(service, "SERIAL")
    for orderid in orderids:
        service.bus.handle(commands.Allocate(orderid, "SERIAL", QTY))

    shared, waits = Recorder(), Waits()
    with structlog.testing.capture_logs() as logs:
        service = make_service(engine, shared, waits)  # the one bus every thread shares
        add_batches(service, "SHARED")
        start = threading.Barrier(THREADS)
        failures: list[BaseException] = []

        def allocate(thread: int) -> None:
            start.wait()
            for i in range(LINES_PER_THREAD):
                try:
                    service.bus.handle(commands.Allocate(f"t{thread}-o{i}", "SHARED", QTY))
                except BaseException as exc:  # reported below, with the others
                    failures.append(exc)

        threads = [threading.Thread(target=allocate, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert [] == failures
    # The same totals per batch as the serial run: (quantity, lines).
    assert {"now": (40, 20), "soon": (30, 15)} == allocations_by_batch(engine, "SERIAL")
    assert allocations_by_batch(engine, "SERIAL") == allocations_by_batch(engine, "SHARED")
    # No order line allocated twice, and the others were out of stock.
    lines = allocated_lines(engine, "SHARED")
    assert len(lines) == len({orderid for orderid, _ in lines}) == 35
    assert len(serial.sent) == len(shared.sent) == len(orderids) - 35
    # Every Allocated event reached the read model and the publisher, once.
    assert sorted(lines) == sorted(read_model(engine, "SHARED"))
    published = [e for e in shared.published if isinstance(e, events.Allocated)]
    assert sorted(lines) == sorted((e.orderid, e.batchref) for e in published)

    retried = [log for log in logs if log["event"] == "message_attempt_failed"]
    by_error = collections.Counter(log["error"].split(":")[0] for log in retried)
    attempts = max((log["attempt"] for log in retried), default=0) + 1
    record_property("retries", len(retried))
    record_property("retries_by_error", dict(by_error))
    record_property("most_attempts", attempts)
    print(f"\n{len(retried)} retries {dict(by_error)}; at most {attempts} attempts for a command")
    assert not [log for log in logs if log["event"] == "message_failed"]
    assert retried, "the threads never conflicted: this test proved nothing"
    # Each retry waited as the policy says (through the sleep given to the bus).
    assert len(retried) == len(waits.asked)
    assert all(0 <= wait <= WAIT_MAX for wait in waits.asked), waits.asked
