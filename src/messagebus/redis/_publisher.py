"""Publishing outgoing messages to Redis streams, one pipeline per batch."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import redis
import redis.asyncio
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from messagebus.relay import BrokerUnavailable
from messagebus.transport import OutgoingMessage

__all__ = [
    "AsyncRedisPublisher",
    "RedisPublisher",
    "redis_version",
    "trim_stream",
]

#: What says Redis cannot be reached (rather than that it refused one entry).
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

_log = structlog.get_logger("messagebus.redis")

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _version(info: dict[str, Any]) -> tuple[int, int, int]:
    found = _VERSION.match(str(info.get("redis_version", "")))
    if found is None:
        raise ValueError(f"not a Redis version: {info.get('redis_version')!r}")
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


def redis_version(client: redis.Redis) -> tuple[int, int, int]:
    """The server's version, e.g. ``(7, 0, 15)``.

    The publisher and the consumer use features of Redis 8 only where this
    says the server has them; on Redis 7.0 they take the 7.0 path.
    """
    return _version(client.info("server"))


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _after(entry_id: str) -> str:
    """The smallest stream id greater than ``entry_id``."""
    ms, seq = _stream_id(entry_id)
    return f"{ms}-{seq + 1}"


def _group_floor(group: dict[str, Any], oldest_pending: str | None) -> str:
    """The oldest entry a group still needs: its oldest pending entry, or the
    first one it has not been given yet."""
    if oldest_pending is not None:
        return oldest_pending
    return _after(_text(group["last-delivered-id"]))


def safe_trim_id(groups: Iterable[tuple[dict[str, Any], str | None]], newest_kept: str) -> str:
    """The ``MINID`` to trim to: entries older than it are neither needed by a
    group (pending, or not yet delivered) nor within the ``MAXLEN`` to keep.

    Args:
        groups: Each group (``XINFO GROUPS``) with its oldest pending entry's id
            (``XPENDING``), or None when nothing is pending.
        newest_kept: The oldest entry within the length to keep.
    """
    floors = [_group_floor(group, pending) for group, pending in groups]
    return min([newest_kept, *floors], key=_stream_id)


def trim_stream(client: redis.Redis, stream: str, maxlen: int) -> int:
    """Trim ``stream`` to about ``maxlen`` entries, never past an entry that a
    consumer group still has pending or has not been given yet.

    ``XADD ... MAXLEN`` (or ``XTRIM MAXLEN``) alone drops the oldest entries
    whatever the groups have read: a consumer that crashed with entries
    pending would find them gone when it reclaims them. This trims with
    ``MINID`` instead, to the older of the ``maxlen``-th newest entry and
    every group's oldest pending (or next undelivered) entry. A group created
    after this looked at the groups may miss trimmed entries: create groups
    before publishing to their stream.

    Returns:
        How many entries were deleted.
    """
    newest: Any = client.xrevrange(stream, "+", "-", count=maxlen)
    if len(newest) < maxlen:
        return 0
    groups = client.xinfo_groups(stream)
    found = []
    for group in groups:
        oldest = None
        if int(group["pending"]):
            summary = client.xpending(stream, _text(group["name"]))
            oldest = _text(summary["min"])
        found.append((group, oldest))
    minid = safe_trim_id(found, _text(newest[-1][0]))
    return int(client.xtrim(stream, minid=minid, approximate=False))


def _trimmable(
    messages: Sequence[OutgoingMessage], results: Sequence[BaseException | None]
) -> list[str]:
    """The streams a batch added to, in order: not those that refused an entry."""
    refused = {m.destination for m, r in zip(messages, results, strict=True) if r is not None}
    streams = dict.fromkeys(message.destination for message in messages)
    return [stream for stream in streams if stream not in refused]


class RedisPublisher:
    """Publishes batches of outgoing messages to Redis streams.

    Each message becomes one entry (``XADD``) of the stream named by its
    destination, its fields those of :meth:`OutgoingMessage.fields
    <messagebus.transport.OutgoingMessage.fields>`; a batch is one pipeline
    (one round trip, not a transaction). Entries of a batch are added in its
    order, so a stream keeps the relay's order.

    Args:
        client: A ``redis.Redis`` (with or without ``decode_responses``).
        maxlen: Trim each stream a batch added to to about this many entries
            after the batch, never dropping what a group still needs
            (:func:`trim_stream`); None (the default) never trims.
    """

    def __init__(self, client: redis.Redis, *, maxlen: int | None = None) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, not {maxlen}")
        self.client = client
        self.maxlen = maxlen

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """Add each message to its stream; for each, None or Redis's refusal.

        Raises:
            BrokerUnavailable: Redis cannot be reached.
        """
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for message in messages:
                    pipe.xadd(message.destination, message.fields())  # type: ignore[arg-type]
                replies = pipe.execute(raise_on_error=False)
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"Redis: {exc}") from exc
        results = [reply if isinstance(reply, BaseException) else None for reply in replies]
        if self.maxlen is not None:
            for stream in _trimmable(messages, results):
                try:
                    trim_stream(self.client, stream, self.maxlen)
                except (*_UNREACHABLE, RedisError) as exc:
                    # The entries are stored: a failed trim is tried again after the next batch.
                    _log.warning("stream_trim_failed", stream=stream, error=str(exc))
        return results

    def version(self) -> tuple[int, int, int]:
        """The server's version (:func:`redis_version`)."""
        try:
            return redis_version(self.client)
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"Redis: {exc}") from exc

    def __repr__(self) -> str:
        return f"RedisPublisher({self.client!r}, maxlen={self.maxlen!r})"


class AsyncRedisPublisher:
    """:class:`RedisPublisher` for asyncio, on a ``redis.asyncio.Redis``.

    Args:
        client: A ``redis.asyncio.Redis``.
        maxlen: As for :class:`RedisPublisher`.
    """

    def __init__(self, client: redis.asyncio.Redis, *, maxlen: int | None = None) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, not {maxlen}")
        self.client = client
        self.maxlen = maxlen

    async def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """Add each message to its stream; for each, None or Redis's refusal.

        Raises:
            BrokerUnavailable: Redis cannot be reached.
        """
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for message in messages:
                    pipe.xadd(message.destination, message.fields())  # type: ignore[arg-type]
                replies = await pipe.execute(raise_on_error=False)
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"Redis: {exc}") from exc
        results = [reply if isinstance(reply, BaseException) else None for reply in replies]
        if self.maxlen is not None:
            for stream in _trimmable(messages, results):
                try:
                    await self._trim(stream, self.maxlen)
                except (*_UNREACHABLE, RedisError) as exc:
                    _log.warning("stream_trim_failed", stream=stream, error=str(exc))
        return results

    async def _trim(self, stream: str, maxlen: int) -> int:
        client = self.client
        newest: Any = await client.xrevrange(stream, "+", "-", count=maxlen)
        if len(newest) < maxlen:
            return 0
        found = []
        for group in await client.xinfo_groups(stream):
            oldest = None
            if int(group["pending"]):
                summary = await client.xpending(stream, _text(group["name"]))
                oldest = _text(summary["min"])
            found.append((group, oldest))
        minid = safe_trim_id(found, _text(newest[-1][0]))
        return int(await client.xtrim(stream, minid=minid, approximate=False))

    async def version(self) -> tuple[int, int, int]:
        """The server's version (see :func:`redis_version`)."""
        try:
            return _version(await self.client.info("server"))
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"Redis: {exc}") from exc

    def __repr__(self) -> str:
        return f"AsyncRedisPublisher({self.client!r}, maxlen={self.maxlen!r})"
