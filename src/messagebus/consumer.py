"""Consumers: messages from a broker handled through the bus, acknowledged after commit.

A consumer takes batches of entries from a reader (a consumer group on
Redis streams: :class:`messagebus.redis.RedisStreamReader`) and, for each,
runs four steps, each a method a test can stop between:

``read``
    the next batch (at most the reader's ``batch``: the cap in flight);
``parse``
    the entry's fields checked (:func:`~messagebus.transport.parse_fields`),
    its payload and metadata loaded by the bus's serializer, which knows only
    the message types the bus handles (untrusted data: nothing else is built);
``handle``
    the message handled by the bus with the metadata it carried: its
    handlers' units of work commit their changes with the message's inbox
    claim (``claim_incoming``), so a message delivered again is not handled
    again;
``ack``
    the batch's entries that are done acknowledged, only after that (one
    ``XACK`` a batch: a crash before it means redeliveries, which the inbox
    makes harmless).

What goes wrong:

* an entry that cannot be parsed (garbage, an unknown name, a wrong
  version, bad metadata) is a dead letter with its raw data and the reason,
  and is acknowledged: the consumer goes on;
* a handling that raises (a command's handler, after its retries) is left
  pending: it is delivered again after the reader's ``claim_idle``; on its
  ``max_deliveries``-th delivery its failure makes a dead letter, and it is
  acknowledged;
* an entry delivered more than ``max_deliveries`` times without being
  acknowledged (its handling crashed the consumer each time) is a dead
  letter without being handled again, and is acknowledged;
* a dead letter that cannot be stored leaves its entry pending: nothing is
  acknowledged that is not handled or kept.
* while the broker cannot be reached (:class:`~messagebus.relay.BrokerUnavailable`),
  :meth:`Consumer.run` waits, longer after each failure in a row, and tries
  again; it reads its own pending entries first when the broker is back.

Dead letters go to the bus's store (``MessageBus(dead_letters=...)``) unless
another is given; a consumer needs one.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import inspect
import json
import signal
import threading
import time
import traceback as _traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import structlog

from ._async_bus import AsyncMessageBus
from ._bus import MessageBus
from ._delivery import deliver, deliver_async
from .exceptions import ConfigurationError
from .messages import Message, Metadata
from .observe import DeadLetter, DeadLetterStore
from .relay import BrokerUnavailable
from .serialization import Serializer
from .transport import parse_fields

__all__ = [
    "AsyncConsumer",
    "AsyncReader",
    "BadEntryError",
    "Consumer",
    "ConsumerSummary",
    "Reader",
    "StreamEntry",
    "parse_entry",
    "raw_data",
]


@attrs.frozen
class StreamEntry:
    """One entry read from a broker, as it was read (untrusted).

    Attributes:
        stream: The stream (or queue) it was read from.
        entry_id: Its id there (a Redis stream entry's ``1700000000000-0``).
        fields: Its field/value pairs (see :mod:`messagebus.transport`), as
            bytes or text; empty when the entry was deleted while pending.
        deliveries: How many times it has been delivered to the group's
            consumers, this time included.
    """

    stream: str
    entry_id: str
    fields: Mapping[Any, Any]
    deliveries: int


class Reader(Protocol):
    """What a :class:`Consumer` needs of a broker: a consumer group's reader
    (:class:`messagebus.redis.RedisStreamReader`)."""

    @property
    def group(self) -> str:
        """The consumer group."""
        ...

    @property
    def consumer(self) -> str:
        """This consumer's name in the group."""
        ...

    @property
    def streams(self) -> Sequence[str]:
        """What it reads."""
        ...

    def read(self) -> list[StreamEntry]:
        """The next batch of entries (at most the cap in flight)."""
        ...

    def ack(self, entries: Sequence[StreamEntry]) -> None:
        """Acknowledge entries."""
        ...


class AsyncReader(Protocol):
    """What an :class:`AsyncConsumer` needs of a broker
    (:class:`messagebus.redis.AsyncRedisStreamReader`)."""

    @property
    def group(self) -> str:
        """The consumer group."""
        ...

    @property
    def consumer(self) -> str:
        """This consumer's name in the group."""
        ...

    @property
    def streams(self) -> Sequence[str]:
        """What it reads."""
        ...

    async def read(self) -> list[StreamEntry]:
        """The next batch of entries (at most the cap in flight)."""
        ...

    async def ack(self, entries: Sequence[StreamEntry]) -> None:
        """Acknowledge entries."""
        ...


class BadEntryError(ValueError):
    """An entry read from a broker is not a message this bus handles; says why.

    Attributes:
        entry: The entry, as it was read.
        reason: What is wrong with it.
    """

    def __init__(self, entry: StreamEntry, reason: str) -> None:
        self.entry = entry
        self.reason = reason
        super().__init__(f"entry {entry.entry_id} of stream {entry.stream!r}: {reason}")


@attrs.define
class ConsumerSummary:
    """What a consumer did since it started.

    Attributes:
        read: Entries read.
        handled: Messages handled and acknowledged.
        dead_lettered: Entries made dead letters and acknowledged.
        failed: Handlings that raised and were left pending, to be delivered again.
    """

    read: int = 0
    handled: int = 0
    dead_lettered: int = 0
    failed: int = 0


# -- what both consumers decide without I/O -----------------------------------------


def parse_entry(serializer: Serializer, entry: StreamEntry) -> tuple[Message, Metadata]:
    """The message and metadata an entry carries, checked; untrusted data.

    Raises:
        BadEntryError: It is not a message the serializer knows, of its version.
    """
    if not entry.fields:
        raise BadEntryError(entry, "the entry was deleted from the stream while pending")
    try:
        wire = parse_fields(entry.fields, entry.stream)
        payload = _json(wire.payload, "payload")
        raw_metadata = _json(wire.metadata, "metadata")
        message = serializer.load_payload(wire.name, payload, version=wire.version)
        try:
            metadata = serializer.load_metadata(raw_metadata)
        except Exception as exc:
            raise ValueError(f"field 'metadata' is not a message's metadata: {exc}") from None
    except BadEntryError:
        raise
    except Exception as exc:  # untrusted: whatever goes wrong is this entry's fault
        raise BadEntryError(entry, str(exc) or type(exc).__name__) from exc
    if str(metadata.message_id) != wire.message_id:
        raise BadEntryError(
            entry,
            f"field 'id' ({wire.message_id[:64]!r}) is not the metadata's message id "
            f"({str(metadata.message_id)!r})",
        )
    return message, metadata


def _json(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"field {field!r} is not JSON: {exc}") from None


def _text_or_none(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def raw_data(entry: StreamEntry) -> dict[str, Any]:
    """An entry as it was read, as JSON-safe data: nothing of it is lost.

    Fields that are UTF-8 text are kept as text; others, in base64 under
    ``fields_base64``.
    """
    fields: dict[str, str] = {}
    undecodable: dict[str, str] = {}
    for raw_key, raw_value in entry.fields.items():
        key = raw_key if isinstance(raw_key, str) else _text_or_none(raw_key)
        value = raw_value if isinstance(raw_value, str) else _text_or_none(raw_value)
        if key is not None and value is not None:
            fields[key] = value
        else:
            raw_key_bytes = raw_key.encode() if isinstance(raw_key, str) else raw_key
            raw_value_bytes = raw_value.encode() if isinstance(raw_value, str) else raw_value
            undecodable[base64.b64encode(raw_key_bytes).decode()] = base64.b64encode(
                raw_value_bytes
            ).decode()
    data: dict[str, Any] = {"stream": entry.stream, "entry_id": entry.entry_id, "fields": fields}
    if undecodable:
        data["fields_base64"] = undecodable
    return data


def _field(entry: StreamEntry, name: str) -> str | None:
    for key, value in entry.fields.items():
        if key in (name, name.encode()):
            return value if isinstance(value, str) else _text_or_none(value)
    return None


def _letter(
    entry: StreamEntry, *, group: str, error: str, traceback: str, now: _dt.datetime
) -> DeadLetter:
    """A dead letter of an entry: its message when it is one, else its raw data."""
    name = _field(entry, "name") or "?"
    version_text = _field(entry, "version") or ""
    version = int(version_text) if version_text.isascii() and version_text.isdigit() else 0
    payload: Any = None
    metadata: Any = None
    try:
        payload = json.loads(_field(entry, "payload") or "null")
        metadata = json.loads(_field(entry, "metadata") or "null")
    except (ValueError, RecursionError):
        pass
    if not isinstance(payload, dict):
        payload = raw_data(entry)  # garbage: the entry itself is what is kept
    elif not isinstance(metadata, dict):
        payload = {**raw_data(entry), "payload": payload}
    if not isinstance(metadata, dict):
        metadata = {}
    return DeadLetter(
        message_name=name[:255],
        message_version=version if version < 2**31 else 0,
        payload=payload,
        metadata=metadata,
        handler=f"messagebus.consumer:{group}",
        error=error,
        traceback=traceback,
        attempts=entry.deliveries,
        failed_at=now,
    )


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _traceback_text(error: BaseException) -> str:
    return "".join(_traceback.format_exception(type(error), error, error.__traceback__))


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class _ConsumerBase:
    """Settings and bookkeeping shared by both consumers."""

    def __init__(
        self,
        bus: MessageBus | AsyncMessageBus,
        *,
        group: str,
        consumer: str,
        max_deliveries: int,
        dead_letters: DeadLetterStore | None,
        logger: Any,
        now: Callable[[], _dt.datetime],
        backoff: tuple[float, float],
    ) -> None:
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, not {max_deliveries!r}")
        store = dead_letters if dead_letters is not None else bus.dead_letters
        if store is None:
            raise ConfigurationError(
                "a consumer needs a dead-letter store for the entries it cannot handle: "
                "build the bus with dead_letters=store, or give the consumer dead_letters=store"
            )
        self.bus = bus
        self.max_deliveries = max_deliveries
        self.dead_letters: DeadLetterStore = store
        self.summary = ConsumerSummary()
        self._handled = 0  # in the batch in hand, not acknowledged yet
        self._now = now
        self._backoff, self._max_backoff = backoff
        self._group = group
        self._log = (logger if logger is not None else structlog.get_logger("messagebus")).bind(
            group=group, consumer=consumer
        )

    def parse(self, entry: StreamEntry) -> tuple[Message, Metadata]:
        """Step 2: the entry's message and metadata, checked.

        Raises:
            BadEntryError: It is not a message the bus handles.
        """
        return parse_entry(self.bus.serializer, entry)

    def _too_many(self, entry: StreamEntry) -> DeadLetter | None:
        if entry.deliveries <= self.max_deliveries:
            return None
        return self._make_letter(
            entry,
            f"delivered {entry.deliveries} times without being acknowledged "
            f"(max_deliveries={self.max_deliveries}): its handling stopped the consumer",
            "",
        )

    def _bad(self, error: BadEntryError) -> DeadLetter:
        self._log.warning(
            "consume_bad_entry", stream=error.entry.stream, entry_id=error.entry.entry_id,
            reason=error.reason,
        )  # fmt: skip
        return self._make_letter(error.entry, f"BadEntryError: {error}", "")

    def _failed(self, entry: StreamEntry, error: Exception) -> DeadLetter | None:
        """A handling raised: a dead letter on its last delivery, else left pending."""
        self.summary.failed += 1
        last = entry.deliveries >= self.max_deliveries
        self._log.warning(
            "consume_failed", stream=entry.stream, entry_id=entry.entry_id,
            deliveries=entry.deliveries, error=_error_text(error), dead_letter=last,
        )  # fmt: skip
        if not last:
            return None
        return self._make_letter(entry, _error_text(error), _traceback_text(error))

    def _make_letter(self, entry: StreamEntry, error: str, traceback: str) -> DeadLetter:
        return _letter(entry, group=self._group, error=error, traceback=traceback, now=self._now())

    def _unavailable(self, error: BrokerUnavailable, failures: int) -> float:
        """How long to wait after the broker was lost ``failures`` times in a row."""
        wait: float = min(self._max_backoff, self._backoff * 2.0 ** min(failures - 1, 32))
        self._log.warning(
            "consume_broker_unavailable", error=str(error), failures=failures, wait_s=wait
        )
        return wait

    def _store_failed(self, entry: StreamEntry, error: Exception) -> None:
        self._log.error(
            "consume_dead_letter_not_stored", stream=entry.stream, entry_id=entry.entry_id,
            error=_error_text(error),
        )  # fmt: skip

    def _lettered(self, entry: StreamEntry, letter: DeadLetter) -> None:
        self.summary.dead_lettered += 1
        self._log.error(
            "consume_dead_lettered", stream=entry.stream, entry_id=entry.entry_id,
            message_name=letter.message_name, error=letter.error,
        )  # fmt: skip


class Consumer(_ConsumerBase):
    """Handles the messages a reader gives through a :class:`~messagebus.MessageBus`.

    ::

        reader = RedisStreamReader(redis.Redis.from_url(url), group="allocation",
                                   streams=["batches"])
        consumer = Consumer(bus, reader)
        consumer.run(handle_signals=True)   # until SIGTERM (or consumer.stop())

    Args:
        bus: The bus; its serializer knows the message types it will load.
        reader: Where entries come from, in a consumer group.
        max_deliveries: How many deliveries an entry gets before it is a dead
            letter.
        dead_letters: Where dead letters go; by default the bus's store.
        logger: A structlog logger; by default ``structlog.get_logger("messagebus")``.
        now: The clock of the dead letters' times (aware).
        sleep: How it waits while the broker cannot be reached.
        backoff: The first and the longest wait while the broker cannot be
            reached (seconds); each failure in a row doubles the wait.

    Attributes:
        summary: What it did so far.
    """

    def __init__(
        self,
        bus: MessageBus,
        reader: Reader,
        *,
        max_deliveries: int = 5,
        dead_letters: DeadLetterStore | None = None,
        logger: Any = None,
        now: Callable[[], _dt.datetime] = _now,
        sleep: Callable[[float], object] = time.sleep,
        backoff: tuple[float, float] = (0.05, 5.0),
    ) -> None:
        super().__init__(
            bus,
            group=reader.group,
            consumer=reader.consumer,
            max_deliveries=max_deliveries,
            dead_letters=dead_letters,
            logger=logger,
            now=now,
            backoff=backoff,
        )
        if inspect.iscoroutinefunction(self.dead_letters.add):
            raise ConfigurationError(
                "a Consumer cannot await its dead-letter store's add(): "
                "give it a sync store, or use an AsyncConsumer"
            )
        self._sleep = sleep
        self.bus: MessageBus = bus
        self.reader = reader
        self._stopping = threading.Event()

    # -- the steps ----------------------------------------------------------------

    def read(self) -> list[StreamEntry]:
        """Step 1: the next batch of entries."""
        entries = self.reader.read()
        self.summary.read += len(entries)
        return entries

    def handle(self, message: Message, metadata: Metadata) -> None:
        """Step 3: handle the message through the bus (its units of work commit)."""
        deliver(self.bus, message, metadata)

    def ack(self, entries: Sequence[StreamEntry]) -> None:
        """Step 4: acknowledge the batch's entries that are done (after their
        handlings committed, or their dead letters were stored)."""
        self.reader.ack(entries)

    def dead_letter(self, entry: StreamEntry, letter: DeadLetter) -> bool:
        """Store a dead letter of the entry; False if it could not be stored
        (the entry is then left pending, not acknowledged)."""
        try:
            self.dead_letters.add(letter)
        except Exception as exc:
            self._store_failed(entry, exc)
            return False
        self._lettered(entry, letter)
        return True

    # -- running ----------------------------------------------------------------------

    def process(self, entry: StreamEntry) -> bool:
        """Parse and handle one entry, or make it a dead letter; True when it
        is done with (to be acknowledged), False when it is left pending."""
        letter = self._too_many(entry)
        if letter is not None:
            return self.dead_letter(entry, letter)
        try:
            message, metadata = self.parse(entry)
        except BadEntryError as bad:
            return self.dead_letter(entry, self._bad(bad))
        try:
            self.handle(message, metadata)
        except Exception as exc:
            letter = self._failed(entry, exc)
            return letter is not None and self.dead_letter(entry, letter)
        self._handled += 1
        return True

    def run_once(self) -> int:
        """Read one batch and process it; returns how many entries it had."""
        entries = self.read()
        self._handled = 0
        done = [entry for entry in entries if self.process(entry)]
        if done:  # one XACK for the batch: a crash before it only means redeliveries
            self.ack(done)
        self.summary.handled += self._handled
        return len(entries)

    def drain(self) -> int:
        """Process batches until a read gives none; returns how many entries were read."""
        total = 0
        while not self._stopping.is_set():
            count = self.run_once()
            if not count:
                break
            total += count
        return total

    def run(self, *, handle_signals: bool = False) -> ConsumerSummary:
        """Process batches until :meth:`stop` (or SIGTERM/SIGINT, with
        ``handle_signals`` in the main thread): the batch in hand is finished
        and acknowledged first."""
        previous: dict[signal.Signals, Any] = {}
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda *_: self.stop())
        self._log.info("consumer_started", streams=self.reader.streams)
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    self.run_once()
                except BrokerUnavailable as exc:
                    failures += 1
                    self._sleep(self._unavailable(exc, failures))
                else:
                    failures = 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self._log.info("consumer_stopped", **attrs.asdict(self.summary))
        return self.summary

    def stop(self) -> None:
        """Stop after the batch in hand (from another thread, or a signal handler)."""
        self._stopping.set()


class AsyncConsumer(_ConsumerBase):
    """:class:`Consumer` for the :class:`~messagebus.AsyncMessageBus`: the same steps, awaited.

    ::

        reader = AsyncRedisStreamReader(redis.asyncio.Redis.from_url(url),
                                        group="allocation", streams=["batches"])
        await AsyncConsumer(bus, reader).run(handle_signals=True)
    """

    def __init__(
        self,
        bus: AsyncMessageBus,
        reader: AsyncReader,
        *,
        max_deliveries: int = 5,
        dead_letters: DeadLetterStore | None = None,
        logger: Any = None,
        now: Callable[[], _dt.datetime] = _now,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        backoff: tuple[float, float] = (0.05, 5.0),
    ) -> None:
        super().__init__(
            bus,
            group=reader.group,
            consumer=reader.consumer,
            max_deliveries=max_deliveries,
            dead_letters=dead_letters,
            logger=logger,
            now=now,
            backoff=backoff,
        )
        self._sleep = sleep
        self.bus: AsyncMessageBus = bus
        self.reader = reader
        self._stopping = False

    async def read(self) -> list[StreamEntry]:
        """Step 1: the next batch of entries."""
        entries = await self.reader.read()
        self.summary.read += len(entries)
        return entries

    async def handle(self, message: Message, metadata: Metadata) -> None:
        """Step 3: handle the message through the bus (its units of work commit)."""
        await deliver_async(self.bus, message, metadata)

    async def ack(self, entries: Sequence[StreamEntry]) -> None:
        """Step 4: acknowledge the batch's entries that are done (after their
        handlings committed, or their dead letters were stored)."""
        await self.reader.ack(entries)

    async def dead_letter(self, entry: StreamEntry, letter: DeadLetter) -> bool:
        """Store a dead letter of the entry; False if it could not be stored
        (the entry is then left pending, not acknowledged)."""
        try:
            result = self.dead_letters.add(letter)
            if isinstance(result, Awaitable):
                await result
        except Exception as exc:
            self._store_failed(entry, exc)
            return False
        self._lettered(entry, letter)
        return True

    async def process(self, entry: StreamEntry) -> bool:
        """Parse and handle one entry, or make it a dead letter; True when it
        is done with (to be acknowledged), False when it is left pending."""
        letter = self._too_many(entry)
        if letter is not None:
            return await self.dead_letter(entry, letter)
        try:
            message, metadata = self.parse(entry)
        except BadEntryError as bad:
            return await self.dead_letter(entry, self._bad(bad))
        try:
            await self.handle(message, metadata)
        except Exception as exc:
            letter = self._failed(entry, exc)
            return letter is not None and await self.dead_letter(entry, letter)
        self._handled += 1
        return True

    async def run_once(self) -> int:
        """Read one batch and process it; returns how many entries it had."""
        entries = await self.read()
        self._handled = 0
        done = [entry for entry in entries if await self.process(entry)]
        if done:  # one XACK for the batch: a crash before it only means redeliveries
            await self.ack(done)
        self.summary.handled += self._handled
        return len(entries)

    async def drain(self) -> int:
        """Process batches until a read gives none; returns how many entries were read."""
        total = 0
        while not self._stopping:
            count = await self.run_once()
            if not count:
                break
            total += count
        return total

    async def run(self, *, handle_signals: bool = False) -> ConsumerSummary:
        """Process batches until :meth:`stop` (or SIGTERM/SIGINT, with
        ``handle_signals``): the batch in hand is finished and acknowledged first."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for signum in signals:
            loop.add_signal_handler(signum, self.stop)
        self._log.info("consumer_started", streams=self.reader.streams)
        failures = 0
        try:
            while not self._stopping:
                try:
                    await self.run_once()
                except BrokerUnavailable as exc:
                    failures += 1
                    await self._sleep(self._unavailable(exc, failures))
                else:
                    failures = 0
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
        self._log.info("consumer_stopped", **attrs.asdict(self.summary))
        return self.summary

    def stop(self) -> None:
        """Stop after the batch in hand."""
        self._stopping = True
