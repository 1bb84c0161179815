"""Reading Redis streams in a consumer group: what a consumer needs of Redis.

One reader per consumer process, named in its group. Each :meth:`read` gives
a batch of at most ``batch`` entries (the cap on messages in flight), from,
in this order:

1. the reader's own pending entries (its history, ``XREADGROUP ... 0``), once
   after it starts: what it read and did not acknowledge before it was
   stopped or killed, when it comes back under the same name;
2. entries that any consumer of the group left pending for longer than
   ``claim_idle`` seconds (``XAUTOCLAIM``), checked every ``claim_every``
   seconds: a crashed consumer's, or a failed handling's;
3. new entries (``XREADGROUP ... >``), waiting up to ``block`` seconds.

Each entry says how many times it was delivered (Redis counts the deliveries
of pending entries: ``XPENDING``), so that the consumer can make a dead
letter of an entry that keeps coming back. :meth:`ack` acknowledges
entries (one ``XACK`` a stream), after their handlers' transactions committed.

Redis 7.0 is what this is written for (``XAUTOCLAIM`` came with 6.2); the
8.x ``XREADGROUP ... CLAIM`` would fold steps 2 and 3 into one command, and
is not needed.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from messagebus.consumer import StreamEntry
from messagebus.relay import BrokerUnavailable

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["AsyncRedisStreamReader", "RedisStreamReader"]

#: What says Redis cannot be reached.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

#: A Redis error that says the group exists already.
_BUSYGROUP = "BUSYGROUP"


def default_consumer_name() -> str:
    """``host-pid``: unique among the processes of a group."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _stream_batches(response: Any) -> list[tuple[str, list[tuple[str, dict[bytes, bytes]]]]]:
    """``XREADGROUP``'s reply as (stream, [(id, fields), ...]), in RESP2 or RESP3 form."""
    if not response:
        return []
    pairs = response.items() if isinstance(response, Mapping) else response
    batches = []
    for stream, entries in pairs:
        # RESP3 wraps each stream's entries in one more list.
        if (
            entries
            and isinstance(entries[0], list)
            and entries[0]
            and isinstance(entries[0][0], tuple)
        ):
            entries = entries[0]
        batches.append(
            (_text(stream), [(_text(entry_id), dict(fields or {})) for entry_id, fields in entries])
        )
    return batches


def _settings(batch: int, block: float, claim_idle: float, claim_every: float | None) -> float:
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch!r}")
    if block < 0 or claim_idle < 0:
        raise ValueError("block and claim_idle are seconds: they must not be negative")
    every = claim_idle / 2 if claim_every is None else claim_every
    if every < 0:
        raise ValueError(f"claim_every must not be negative, not {claim_every!r}")
    return every


class _ReaderState:
    """What both readers decide without I/O: which step comes next."""

    def __init__(
        self,
        *,
        group: str,
        streams: Sequence[str],
        consumer: str | None,
        batch: int,
        block: float,
        claim_idle: float,
        claim_every: float | None,
        start: str,
        clock: Callable[[], float],
    ) -> None:
        if not streams:
            raise ValueError("give at least one stream to read")
        self.group = group
        self.streams = list(dict.fromkeys(streams))
        self.consumer = consumer if consumer is not None else default_consumer_name()
        self.batch = batch
        self.block = block
        self.claim_idle = claim_idle
        self.claim_every = _settings(batch, block, claim_idle, claim_every)
        self.start = start
        self.clock = clock
        # The history is read once, from each stream's start, then new entries.
        self.history: dict[str, str] = dict.fromkeys(self.streams, "0")
        self.next_claim = clock()  # reclaim at once: a consumer may have died meanwhile
        self.claim_cursor: dict[str, str] = dict.fromkeys(self.streams, "0-0")
        self.reclaimed = 0

    def lost(self) -> None:
        """Redis was lost: read this consumer's pending entries first again."""
        self.history = dict.fromkeys(self.streams, "0")

    def claim_due(self) -> bool:
        return self.clock() >= self.next_claim

    def claimed_round(self, finished: bool) -> None:
        if finished:
            self.next_claim = self.clock() + self.claim_every

    def history_read(self, stream: str, entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
        if entries:
            self.history[stream] = entries[-1][0]
        else:
            del self.history[stream]


def _by_stream(entries: Sequence[StreamEntry]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in entries:
        found.setdefault(entry.stream, []).append(entry.entry_id)
    return found


def _pending_counts(rows: Iterable[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for found in rows:
        for row in found:
            counts[_text(row["message_id"])] = int(row["times_delivered"])
    return counts


class RedisStreamReader:
    """Reads streams in a consumer group with redis-py (``redis.Redis``).

    Args:
        client: A redis-py client; its replies may be bytes or text.
        group: The consumer group (made, with the stream, when missing).
        streams: The streams to read.
        consumer: This consumer's name in the group; by default ``host-pid``.
            A process that restarts under the same name takes up its own
            pending entries at once; under a new one, they are reclaimed
            after ``claim_idle``.
        batch: The most entries read at once: the cap on messages in flight.
        block: How long a read waits for new entries (seconds).
        claim_idle: How long an entry stays pending before another consumer
            may take it (seconds): longer than a handling takes.
        claim_every: How often to look for such entries (by default every
            ``claim_idle / 2`` seconds).
        start: Where a group made by :meth:`setup` starts: ``"0"`` (every
            entry in the stream) or ``"$"`` (entries added from now on).
        clock: A monotonic clock, in seconds.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        group: str,
        streams: Sequence[str],
        consumer: str | None = None,
        batch: int = 10,
        block: float = 1.0,
        claim_idle: float = 60.0,
        claim_every: float | None = None,
        start: str = "0",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._state = _ReaderState(
            group=group,
            streams=streams,
            consumer=consumer,
            batch=batch,
            block=block,
            claim_idle=claim_idle,
            claim_every=claim_every,
            start=start,
            clock=clock,
        )

    @property
    def group(self) -> str:
        """The consumer group."""
        return self._state.group

    @property
    def consumer(self) -> str:
        """This consumer's name in the group."""
        return self._state.consumer

    @property
    def streams(self) -> list[str]:
        """The streams read."""
        return list(self._state.streams)

    def setup(self) -> None:
        """Make the group on each stream (and the stream) unless it exists."""
        for stream in self._state.streams:
            try:
                self.client.xgroup_create(stream, self.group, self._state.start, mkstream=True)
            except redis.ResponseError as exc:
                if _BUSYGROUP not in str(exc):
                    raise

    def read(self) -> list[StreamEntry]:
        """The next batch: own pending entries, then reclaimed ones, then new ones.

        Raises:
            BrokerUnavailable: Redis cannot be reached; the next read starts
                with this consumer's own pending entries again.
        """
        try:
            return self._read()
        except _UNREACHABLE as exc:
            self._state.lost()
            raise BrokerUnavailable(f"Redis: {exc}") from exc

    def _read(self) -> list[StreamEntry]:
        state = self._state
        while state.history:
            entries = self._read_history()
            if entries:
                return entries
        if state.claim_due():
            claimed = self._reclaim()
            if claimed:
                return claimed
        response = self.client.xreadgroup(
            state.group,
            state.consumer,
            dict.fromkeys(state.streams, ">"),
            count=state.batch,
            block=int(state.block * 1000) or None,
        )
        return [
            StreamEntry(stream, entry_id, fields, 1)
            for stream, entries in _stream_batches(response)
            for entry_id, fields in entries
        ]

    def _read_history(self) -> list[StreamEntry]:
        state = self._state
        stream, after = next(iter(state.history.items()))
        response = self.client.xreadgroup(
            state.group, state.consumer, {stream: after}, count=state.batch
        )
        entries = [entry for _, found in _stream_batches(response) for entry in found]
        state.history_read(stream, entries)
        return self._with_counts(stream, entries)

    def _reclaim(self) -> list[StreamEntry]:
        state = self._state
        for stream in state.streams:
            cursor = state.claim_cursor[stream]
            reply = self.client.xautoclaim(
                stream,
                state.group,
                state.consumer,
                int(state.claim_idle * 1000),
                start_id=cursor,
                count=state.batch,
            )
            state.claim_cursor[stream] = _text(reply[0])
            entries = [(_text(entry_id), dict(fields or {})) for entry_id, fields in reply[1]]
            if entries:
                state.reclaimed += len(entries)
                return self._with_counts(stream, entries)
        state.claimed_round(all(cursor == "0-0" for cursor in state.claim_cursor.values()))
        return []

    def _with_counts(
        self, stream: str, entries: list[tuple[str, dict[bytes, bytes]]]
    ) -> list[StreamEntry]:
        if not entries:
            return []
        pipe = self.client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(
                stream, self.group, entry_id, entry_id, 1, consumername=self.consumer
            )
        counts = _pending_counts(pipe.execute())
        return [
            StreamEntry(stream, entry_id, fields, counts.get(entry_id, 1))
            for entry_id, fields in entries
        ]

    def ack(self, entries: Sequence[StreamEntry]) -> None:
        """Acknowledge entries: the group is done with them (one ``XACK`` a stream).

        Raises:
            BrokerUnavailable: Redis cannot be reached (the entries stay pending).
        """
        try:
            for stream, ids in _by_stream(entries).items():
                self.client.xack(stream, self.group, *ids)
        except _UNREACHABLE as exc:
            self._state.lost()
            raise BrokerUnavailable(f"Redis: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"RedisStreamReader(group={self.group!r}, streams={self.streams!r}, "
            f"consumer={self.consumer!r})"
        )


class AsyncRedisStreamReader:
    """:class:`RedisStreamReader` on ``redis.asyncio.Redis``: the same, awaited."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        group: str,
        streams: Sequence[str],
        consumer: str | None = None,
        batch: int = 10,
        block: float = 1.0,
        claim_idle: float = 60.0,
        claim_every: float | None = None,
        start: str = "0",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._state = _ReaderState(
            group=group,
            streams=streams,
            consumer=consumer,
            batch=batch,
            block=block,
            claim_idle=claim_idle,
            claim_every=claim_every,
            start=start,
            clock=clock,
        )

    @property
    def group(self) -> str:
        """The consumer group."""
        return self._state.group

    @property
    def consumer(self) -> str:
        """This consumer's name in the group."""
        return self._state.consumer

    @property
    def streams(self) -> list[str]:
        """The streams read."""
        return list(self._state.streams)

    async def setup(self) -> None:
        """Make the group on each stream (and the stream) unless it exists."""
        for stream in self._state.streams:
            try:
                await self.client.xgroup_create(
                    stream, self.group, self._state.start, mkstream=True
                )
            except redis.ResponseError as exc:
                if _BUSYGROUP not in str(exc):
                    raise

    async def read(self) -> list[StreamEntry]:
        """The next batch: own pending entries, then reclaimed ones, then new ones.

        Raises:
            BrokerUnavailable: Redis cannot be reached; the next read starts
                with this consumer's own pending entries again.
        """
        try:
            return await self._read()
        except _UNREACHABLE as exc:
            self._state.lost()
            raise BrokerUnavailable(f"Redis: {exc}") from exc

    async def _read(self) -> list[StreamEntry]:
        state = self._state
        while state.history:
            entries = await self._read_history()
            if entries:
                return entries
        if state.claim_due():
            claimed = await self._reclaim()
            if claimed:
                return claimed
        response = await self.client.xreadgroup(
            state.group,
            state.consumer,
            dict.fromkeys(state.streams, ">"),
            count=state.batch,
            block=int(state.block * 1000) or None,
        )
        return [
            StreamEntry(stream, entry_id, fields, 1)
            for stream, entries in _stream_batches(response)
            for entry_id, fields in entries
        ]

    async def _read_history(self) -> list[StreamEntry]:
        state = self._state
        stream, after = next(iter(state.history.items()))
        response = await self.client.xreadgroup(
            state.group, state.consumer, {stream: after}, count=state.batch
        )
        entries = [entry for _, found in _stream_batches(response) for entry in found]
        state.history_read(stream, entries)
        return await self._with_counts(stream, entries)

    async def _reclaim(self) -> list[StreamEntry]:
        state = self._state
        for stream in state.streams:
            cursor = state.claim_cursor[stream]
            reply = await self.client.xautoclaim(
                stream,
                state.group,
                state.consumer,
                int(state.claim_idle * 1000),
                start_id=cursor,
                count=state.batch,
            )
            state.claim_cursor[stream] = _text(reply[0])
            entries = [(_text(entry_id), dict(fields or {})) for entry_id, fields in reply[1]]
            if entries:
                state.reclaimed += len(entries)
                return await self._with_counts(stream, entries)
        state.claimed_round(all(cursor == "0-0" for cursor in state.claim_cursor.values()))
        return []

    async def _with_counts(
        self, stream: str, entries: list[tuple[str, dict[bytes, bytes]]]
    ) -> list[StreamEntry]:
        if not entries:
            return []
        pipe = self.client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(
                stream, self.group, entry_id, entry_id, 1, consumername=self.consumer
            )
        counts = _pending_counts(await pipe.execute())
        return [
            StreamEntry(stream, entry_id, fields, counts.get(entry_id, 1))
            for entry_id, fields in entries
        ]

    async def ack(self, entries: Sequence[StreamEntry]) -> None:
        """Acknowledge entries: the group is done with them (one ``XACK`` a stream).

        Raises:
            BrokerUnavailable: Redis cannot be reached (the entries stay pending).
        """
        try:
            for stream, ids in _by_stream(entries).items():
                await self.client.xack(stream, self.group, *ids)
        except _UNREACHABLE as exc:
            self._state.lost()
            raise BrokerUnavailable(f"Redis: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"AsyncRedisStreamReader(group={self.group!r}, streams={self.streams!r}, "
            f"consumer={self.consumer!r})"
        )
