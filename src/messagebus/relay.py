"""The relay: publishes the outbox's rows to a broker, in order per partition key.

A unit of work writes outgoing messages to the outbox table in the same
transaction as the change that raised them; a relay then moves them to the
broker. Each batch goes through three steps, each a method of its own:

1. :meth:`Relay.claim` - take the oldest pending rows (on PostgreSQL, only of
   keys no other relay holds; see :mod:`messagebus.sqlalchemy` 's outbox);
2. :meth:`Relay.publish` - publish them in one pipelined batch;
3. :meth:`Relay.mark` - mark them sent (and record the rows the broker
   refused), which ends the claim.

A relay that dies at any point leaves the rows it did not mark pending: they
are published again by the next claim (at least once; a consumer's inbox
drops the copies). Rows of one key are published in the order they were
written, by one relay at a time.

A relay waits for work without polling hard: a unit of work that commits
outbox rows in the same process wakes it at once; on PostgreSQL with psycopg
it also listens for the ``NOTIFY`` every commit of outbox rows sends; it polls
only every ``poll_interval`` seconds in case both were missed. While the
broker or the database cannot be reached it backs off (capped exponential),
then goes on.

::

    from messagebus.redis import RedisPublisher
    from messagebus.relay import Relay
    from messagebus.sqlalchemy import SqlAlchemyOutbox

    relay = Relay(SqlAlchemyOutbox(engine), RedisPublisher(redis.Redis.from_url(url)))
    relay.run()            # until relay.stop() (the command line: until SIGTERM)

Or from the command line: ``messagebus relay --db URL --redis URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import structlog
import tenacity
from tenacity import RetryCallState
from tenacity.wait import wait_base

from ._wakeup import add_waker, remove_waker
from .exceptions import MessageBusError
from .retry import is_transient
from .transport import OutgoingMessage

if TYPE_CHECKING:
    from .sqlalchemy._outbox import AsyncSqlAlchemyOutbox, Claim, SqlAlchemyOutbox

__all__ = [
    "AsyncPublisher",
    "AsyncRelay",
    "BrokerUnavailable",
    "Published",
    "Publisher",
    "Relay",
    "RelayStats",
]

_log = structlog.get_logger("messagebus.relay")


class BrokerUnavailable(MessageBusError):
    """The broker cannot be reached: nothing is known of what it received.

    A publisher raises it for a batch; the relay leaves the batch's rows
    pending, waits, and tries again.
    """


@attrs.frozen
class Published:
    """What the broker answered for a batch.

    Attributes:
        sent: The ids of the rows it stored.
        failures: The rows it refused: row id -> its error.
    """

    sent: list[int]
    failures: dict[int, str]


class Publisher(Protocol):
    """Publishes a batch of messages to the broker (e.g. ``RedisPublisher``)."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """Publish ``messages`` in order; for each, None (stored) or the broker's refusal.

        Raises:
            BrokerUnavailable: The broker cannot be reached.
        """
        ...


class AsyncPublisher(Protocol):
    """:class:`Publisher` for asyncio (e.g. ``AsyncRedisPublisher``)."""

    async def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """Publish ``messages`` in order; for each, None or the broker's refusal."""
        ...


@attrs.define
class RelayStats:
    """What a relay has done since it started.

    Attributes:
        batches: Batches published.
        sent: Rows published and marked sent.
        failed: Rows the broker refused (tried again later).
        parked: Rows parked after too many refusals.
        outages: Times the broker or the database could not be reached.
        deleted: Sent rows deleted after the retention period.
    """

    batches: int = 0
    sent: int = 0
    failed: int = 0
    parked: int = 0
    outages: int = 0
    deleted: int = 0

    def summary(self) -> str:
        """One line for a terminal."""
        return (
            f"sent {self.sent} in {self.batches} batch{'' if self.batches == 1 else 'es'}; "
            f"{self.failed} refused, "
            f"{self.parked} parked; {self.outages} outages; "
            f"{self.deleted} old rows deleted"
        )


def _default_backoff() -> wait_base:
    return tenacity.wait_exponential(multiplier=0.1, max=30) + tenacity.wait_random(0, 0.1)


def _backoff_delay(wait: wait_base, attempt: int) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row, by a tenacity wait."""
    state = RetryCallState(tenacity.Retrying(wait=wait), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return float(wait(state))


def _published(claim: Claim, results: Sequence[BaseException | None]) -> Published:
    if len(results) != len(claim.entries):
        raise RuntimeError(
            f"the publisher answered {len(results)} results for {len(claim.entries)} messages"
        )
    sent: list[int] = []
    failures: dict[int, str] = {}
    for entry, result in zip(claim.entries, results, strict=True):
        if result is None:
            sent.append(entry.id)
        else:
            failures[entry.id] = f"{type(result).__name__}: {result}"
    return Published(sent, failures)


def _listen_args(engine: Any) -> tuple[Any, Any] | None:
    """psycopg's connect arguments for the relay's ``LISTEN`` connection, or None."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return None
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    return args, kwargs


def _is_outage(exc: Exception) -> bool:
    """The broker, or the database, cannot be reached (or is busy): worth waiting for."""
    return isinstance(exc, BrokerUnavailable) or is_transient(exc)


def _outage(stats: RelayStats, settings: _Settings, exc: Exception, failures: int) -> float:
    """Count and log the ``failures``-th failure in a row; the seconds to wait."""
    stats.outages += failures == 1
    delay = _backoff_delay(settings.backoff, failures)
    event = (
        "relay_broker_unavailable"
        if isinstance(exc, BrokerUnavailable)
        else "relay_database_unavailable"
    )
    _log.warning(event, error=str(exc), retry_in=delay)
    return delay


def _count(
    stats: RelayStats, settings: _Settings, max_tries: int, claim: Claim, published: Published
) -> None:
    stats.batches += 1
    stats.sent += len(published.sent)
    stats.failed += len(published.failures)
    stats.parked += sum(
        1
        for entry in claim.entries
        if entry.id in published.failures and entry.tries + 1 >= max_tries
    )
    if published.failures:
        _log.warning("relay_rows_refused", count=len(published.failures), rows=published.failures)
    if settings.on_batch is not None:
        settings.on_batch(stats)


class _Settings:
    def __init__(
        self,
        *,
        batch_size: int,
        poll_interval: float,
        backoff: wait_base | None,
        retention: _dt.timedelta | None,
        cleanup_interval: float,
        listen: bool,
        on_batch: Callable[[RelayStats], None] | None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval}")
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.backoff = backoff if backoff is not None else _default_backoff()
        self.retention = retention
        self.cleanup_interval = cleanup_interval
        self.listen = listen
        self.on_batch = on_batch


class Relay:
    """Publishes the outbox's rows to a broker: claim, publish, mark.

    Args:
        outbox: The outbox table (:class:`~messagebus.sqlalchemy.SqlAlchemyOutbox`).
        publisher: The broker (:class:`~messagebus.redis.RedisPublisher`).
        batch_size: Rows claimed and published at once.
        poll_interval: Seconds between looks at the table when nothing woke
            the relay (the fallback: commits in this process and, on
            PostgreSQL, ``NOTIFY`` wake it at once).
        backoff: How long to wait while the broker or the database cannot be
            reached (a transient error, as :func:`~messagebus.is_transient`
            says), a tenacity wait by the number of failures in a row
            (default: exponential from 0.1 s, at most 30 s, with a little jitter).
        retention: Delete rows sent longer ago than this (None: keep them).
        cleanup_interval: Seconds between such deletions.
        listen: Listen for PostgreSQL's ``NOTIFY`` (psycopg only).
        sleep: Waits that many seconds; by default a wait that :meth:`stop` ends.
        on_batch: Called with the stats after each batch (progress).

    Attributes:
        stats: What it has done so far.
    """

    def __init__(
        self,
        outbox: SqlAlchemyOutbox,
        publisher: Publisher,
        *,
        batch_size: int = 500,
        poll_interval: float = 5.0,
        backoff: wait_base | None = None,
        retention: _dt.timedelta | None = _dt.timedelta(days=7),
        cleanup_interval: float = 60.0,
        listen: bool = True,
        sleep: Callable[[float], object] | None = None,
        on_batch: Callable[[RelayStats], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self._settings = _Settings(
            batch_size=batch_size,
            poll_interval=poll_interval,
            backoff=backoff,
            retention=retention,
            cleanup_interval=cleanup_interval,
            listen=listen,
            on_batch=on_batch,
        )
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._sleep = sleep if sleep is not None else self._stopping.wait
        self.stats = RelayStats()

    # -- the protocol's steps -----------------------------------------------------

    def claim(self) -> Claim:
        """Step 1: claim the next batch (possibly empty)."""
        return self.outbox.claim(self._settings.batch_size)

    def publish(self, claim: Claim) -> Published:
        """Step 2: publish the claimed rows in one batch.

        Raises:
            BrokerUnavailable: The broker cannot be reached.
        """
        return _published(claim, self.publisher.publish(claim.messages))

    def mark(self, claim: Claim, published: Published) -> None:
        """Step 3: mark what was stored as sent, record the refusals; ends the claim."""
        self.outbox.finish(claim, published.sent, published.failures)

    # -- driving them -----------------------------------------------------------------

    def relay_batch(self) -> int:
        """Claim, publish and mark one batch; returns how many rows it claimed.

        Raises:
            BrokerUnavailable: The broker cannot be reached (the rows stay pending).
        """
        claim = self.claim()
        try:
            if not claim.entries:
                return 0
            published = self.publish(claim)
            self.mark(claim, published)
        finally:
            # Ends the claim if mark did not (as a crash would: its rows stay pending).
            self.outbox.release(claim)
        _count(self.stats, self._settings, self.outbox.max_tries, claim, published)
        return len(claim.entries)

    def run_until_idle(self) -> RelayStats:
        """Publish batches until no row is left to take now; returns the stats.

        Raises:
            BrokerUnavailable: The broker cannot be reached.
        """
        while not self._stopping.is_set() and self.relay_batch():
            pass
        return self.stats

    def run(self) -> RelayStats:
        """Relay until :meth:`stop`; returns the stats. Waits while the broker is down."""
        handle = add_waker(self._wake.set)
        listener = _Listener(self.outbox, self._wake, self._stopping, self._settings.listen)
        listener.start()
        _log.info("relay_started", table=self.outbox.table.fullname)
        failures = 0
        try:
            self._cleanup()  # at start, then every cleanup_interval
            next_cleanup = time.monotonic() + self._settings.cleanup_interval
            while not self._stopping.is_set():
                if time.monotonic() >= next_cleanup:
                    self._cleanup()
                    next_cleanup = time.monotonic() + self._settings.cleanup_interval
                self._wake.clear()  # before the claim: a commit after it wakes the wait
                try:
                    claimed = self.relay_batch()
                except Exception as exc:
                    if not _is_outage(exc):
                        raise
                    failures += 1
                    self._sleep(_outage(self.stats, self._settings, exc, failures))
                    continue
                if failures:
                    _log.info("relay_broker_back", after_failures=failures)
                    failures = 0
                if claimed < self._settings.batch_size:
                    self._wake.wait(self._settings.poll_interval)
        finally:
            remove_waker(handle)
            listener.stop()
            _log.info("relay_stopped", **attrs.asdict(self.stats))
        return self.stats

    def _cleanup(self) -> None:
        retention = self._settings.retention
        if retention is not None:
            self.stats.deleted += self.outbox.delete_sent(retention)

    def stop(self) -> None:
        """Stop after the current batch (thread-safe; a signal handler may call it)."""
        self._stopping.set()
        self._wake.set()


class _Listener:
    """A thread that turns PostgreSQL's ``NOTIFY`` on the outbox's channel into wake-ups."""

    def __init__(
        self,
        outbox: SqlAlchemyOutbox,
        wake: threading.Event,
        stopping: threading.Event,
        enabled: bool,
    ) -> None:
        self._channel = outbox.notify_channel if enabled else None
        self._connect = _listen_args(outbox.engine) if self._channel else None
        self._wake = wake
        self._stopping = stopping
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._connect is None:
            return
        self._thread = threading.Thread(target=self._run, name="relay-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg
        from psycopg import sql

        assert self._connect is not None
        assert self._channel is not None
        args, kwargs = self._connect
        while not self._stopping.is_set():
            try:
                with psycopg.connect(*args, **kwargs, autocommit=True) as connection:
                    connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self._wake.set()  # what was committed before LISTEN: look once
                    while not self._stopping.is_set():
                        for _ in connection.notifies(timeout=0.5):
                            self._wake.set()
            except psycopg.Error as exc:  # pragma: no cover - a database that went away
                _log.warning("relay_listen_failed", error=str(exc))
                self._stopping.wait(1.0)  # then listen again; polling covers the gap

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.join()


class AsyncRelay:
    """:class:`Relay` for asyncio: the same steps, awaited.

    Args:
        outbox: :class:`~messagebus.sqlalchemy.AsyncSqlAlchemyOutbox`.
        publisher: :class:`~messagebus.redis.AsyncRedisPublisher`.
        sleep: Awaited to wait; by default a wait that :meth:`stop` ends.

    The other arguments are :class:`Relay`'s.
    """

    def __init__(
        self,
        outbox: AsyncSqlAlchemyOutbox,
        publisher: AsyncPublisher,
        *,
        batch_size: int = 500,
        poll_interval: float = 5.0,
        backoff: wait_base | None = None,
        retention: _dt.timedelta | None = _dt.timedelta(days=7),
        cleanup_interval: float = 60.0,
        listen: bool = True,
        sleep: Callable[[float], Any] | None = None,
        on_batch: Callable[[RelayStats], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self._settings = _Settings(
            batch_size=batch_size,
            poll_interval=poll_interval,
            backoff=backoff,
            retention=retention,
            cleanup_interval=cleanup_interval,
            listen=listen,
            on_batch=on_batch,
        )
        self._sleep = sleep
        self._stopping = False
        self._events: tuple[asyncio.Event, asyncio.Event] | None = None  # wake, stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = RelayStats()

    async def claim(self) -> Claim:
        """Step 1: claim the next batch (possibly empty)."""
        return await self.outbox.claim(self._settings.batch_size)

    async def publish(self, claim: Claim) -> Published:
        """Step 2: publish the claimed rows in one batch."""
        return _published(claim, await self.publisher.publish(claim.messages))

    async def mark(self, claim: Claim, published: Published) -> None:
        """Step 3: mark what was stored as sent, record the refusals; ends the claim."""
        await self.outbox.finish(claim, published.sent, published.failures)

    async def relay_batch(self) -> int:
        """Claim, publish and mark one batch; returns how many rows it claimed."""
        claim = await self.claim()
        try:
            if not claim.entries:
                return 0
            published = await self.publish(claim)
            await self.mark(claim, published)
        finally:
            await self.outbox.release(claim)  # ends the claim if mark did not
        _count(self.stats, self._settings, self.outbox.max_tries, claim, published)
        return len(claim.entries)

    async def run_until_idle(self) -> RelayStats:
        """Publish batches until no row is left to take now; returns the stats."""
        while not self._stopping and await self.relay_batch():
            pass
        return self.stats

    async def run(self) -> RelayStats:
        """Relay until :meth:`stop` (or cancellation); returns the stats."""
        loop = asyncio.get_running_loop()
        wake, stop = asyncio.Event(), asyncio.Event()
        self._loop, self._events = loop, (wake, stop)
        if self._stopping:
            stop.set()

        def waker() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(wake.set)

        handle = add_waker(waker)
        listener = asyncio.create_task(self._listen(wake)) if self._settings.listen else None
        _log.info("relay_started", table=self.outbox.table.fullname)
        failures = 0
        try:
            await self._cleanup()  # at start, then every cleanup_interval
            next_cleanup = time.monotonic() + self._settings.cleanup_interval
            while not self._stopping:
                if time.monotonic() >= next_cleanup:
                    await self._cleanup()
                    next_cleanup = time.monotonic() + self._settings.cleanup_interval
                wake.clear()
                try:
                    claimed = await self.relay_batch()
                except Exception as exc:
                    if not _is_outage(exc):
                        raise
                    failures += 1
                    delay = _outage(self.stats, self._settings, exc, failures)
                    if self._sleep is not None:
                        await self._sleep(delay)
                    else:
                        await _wait(stop, delay)  # commits do not cut a backoff short
                    continue
                if failures:
                    _log.info("relay_broker_back", after_failures=failures)
                    failures = 0
                if claimed < self._settings.batch_size:
                    await _wait(wake, self._settings.poll_interval)
        finally:
            remove_waker(handle)
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            _log.info("relay_stopped", **attrs.asdict(self.stats))
        return self.stats

    async def _cleanup(self) -> None:
        retention = self._settings.retention
        if retention is not None:
            self.stats.deleted += await self.outbox.delete_sent(retention)

    async def _listen(self, wake: asyncio.Event) -> None:
        channel = self.outbox.notify_channel
        connect = _listen_args(self.outbox.engine.sync_engine) if channel else None
        if channel is None or connect is None:
            return
        import psycopg
        from psycopg import sql

        args, kwargs = connect
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(*args, **kwargs, autocommit=True)
                async with connection:
                    await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    wake.set()
                    async for _ in connection.notifies():
                        wake.set()
            except psycopg.Error as exc:  # pragma: no cover - a database that went away
                _log.warning("relay_listen_failed", error=str(exc))
                await asyncio.sleep(1.0)

    def stop(self) -> None:
        """Stop after the current batch (call it from the relay's event loop, or
        any thread: it is passed on thread-safely)."""
        self._stopping = True
        loop, events = self._loop, self._events
        if loop is None or events is None:
            return

        def set_both() -> None:
            for event in events:
                event.set()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            set_both()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to stop
                loop.call_soon_threadsafe(set_both)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set, or ``seconds`` have passed."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
