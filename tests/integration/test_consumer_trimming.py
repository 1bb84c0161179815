"""Trimming a stream (the publisher's trim_stream) never drops an entry that a
consumer group still has pending, or has not been given yet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from messagebus.redis import RedisStreamReader, trim_stream
from tests.servers import unique_name

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_entries_pending_in_a_group_survive_trimming_and_are_reclaimed(client: redis.Redis) -> None:
    stream = unique_name("trim")
    crashed = RedisStreamReader(
        client, group="g", streams=[stream], consumer="crashed", batch=3, block=0.01
    )
    crashed.setup()
    ids = [client.xadd(stream, {"n": str(number)}).decode() for number in range(10)]
    held = crashed.read()  # the first three, never acknowledged: this consumer died
    assert ids[:3] == [entry.entry_id for entry in held]
    survivor = RedisStreamReader(
        client,
        group="g",
        streams=[stream],
        consumer="survivor",
        batch=10,
        block=0.01,
        claim_every=3600,
    )
    for entry in survivor.read():  # the rest, handled and acknowledged
        survivor.ack([entry])

    trim_stream(client, stream, maxlen=2)  # would keep the last two, without pending entries

    kept = [entry_id.decode() for entry_id, _ in client.xrange(stream)]
    assert ids == kept
    rescuer = RedisStreamReader(
        client, group="g", streams=[stream], consumer="rescuer", claim_idle=0, block=0.01
    )
    reclaimed = rescuer.read()
    assert [
        (entry_id, {b"n": str(number).encode()}, 2) for number, entry_id in enumerate(ids[:3])
    ] == [(entry.entry_id, dict(entry.fields), entry.deliveries) for entry in reclaimed]
    rescuer.ack(reclaimed)
    trim_stream(client, stream, maxlen=2)
    assert ids[-2:] == [entry_id.decode() for entry_id, _ in client.xrange(stream)]
