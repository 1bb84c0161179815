"""Trimming a stream after publishing: never an entry a consumer group still needs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from structlog.testing import capture_logs

from messagebus.redis import RedisPublisher, redis_version, trim_stream
from tests.servers import RedisServer, unique_name

from ._relay_helpers import message

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def publish(client: redis.Redis, stream: str, count: int, *, maxlen: int | None = None) -> None:
    publisher = RedisPublisher(client, maxlen=maxlen)
    assert [None] * count == publisher.publish([message(stream, "k", n) for n in range(count)])


def test_without_a_group_a_stream_is_trimmed_to_maxlen(client: redis.Redis) -> None:
    stream = unique_name("trim")

    publish(client, stream, 10, maxlen=4)

    assert 4 == client.xlen(stream)


def test_entries_a_group_has_pending_are_kept(client: redis.Redis) -> None:
    stream = unique_name("trim")
    publish(client, stream, 5)
    client.xgroup_create(stream, "workers", id="0")
    [(_, read)] = client.xreadgroup("workers", "c1", {stream: ">"}, count=3)
    client.xack(stream, "workers", read[1][0], read[2][0])  # the first stays pending

    publish(client, stream, 5, maxlen=2)

    kept = [entry_id for entry_id, _ in client.xrange(stream)]
    assert read[0][0] == kept[0]  # from the pending entry on
    assert 10 == len(kept)


def test_entries_a_group_was_not_given_yet_are_kept(client: redis.Redis) -> None:
    stream = unique_name("trim")
    publish(client, stream, 4)
    client.xgroup_create(stream, "workers", id="0")
    [(_, read)] = client.xreadgroup("workers", "c1", {stream: ">"}, count=2)
    client.xack(stream, "workers", *[entry_id for entry_id, _ in read])

    deleted = trim_stream(client, stream, maxlen=1)

    assert 2 == deleted  # the two acknowledged; the two not yet read are kept
    assert 2 == client.xlen(stream)


def test_a_short_stream_is_not_trimmed(client: redis.Redis) -> None:
    stream = unique_name("trim")
    publish(client, stream, 3)

    assert 0 == trim_stream(client, stream, maxlen=5)


def test_the_server_version_is_read(client: redis.Redis) -> None:
    major, minor, _ = redis_version(client)

    assert major >= 5
    assert (major, minor) == RedisPublisher(client).version()[:2]


def test_maxlen_must_be_positive(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="maxlen must be at least 1, not 0"):
        RedisPublisher(client, maxlen=0)


def test_a_stream_that_refused_an_entry_is_not_trimmed_and_the_batch_goes_on(
    client: redis.Redis,
) -> None:
    stream, broken = unique_name("trim"), unique_name("not-a-stream")
    client.set(broken, "a string")
    publisher = RedisPublisher(client, maxlen=1)

    results = publisher.publish([message(broken, "k", 1), message(stream, "k", 2)])

    assert [True, False] == [isinstance(result, redis.ResponseError) for result in results]
    assert 1 == client.xlen(stream)


def test_a_trim_that_fails_leaves_the_entries_published(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    # A user that may add to streams but not look at their groups: the trim fails.
    admin.acl_setuser(
        "relay", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-xinfo"]
    )
    client = redis.Redis.from_url(redis_server.url, username="relay", password="pw")
    stream = unique_name("trim")
    publisher = RedisPublisher(client, maxlen=1)

    with capture_logs() as logs:
        assert [None, None] == publisher.publish([message(stream, "k", 1), message(stream, "k", 2)])

    assert 2 == admin.xlen(stream)  # not trimmed, and nothing lost
    assert ["stream_trim_failed"] == [entry["event"] for entry in logs]
    client.close()
    admin.close()
