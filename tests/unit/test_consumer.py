"""The consumer's decisions that need no broker: parsing entries, raw data kept in
dead letters, waits while the broker is down; and its public names."""

from __future__ import annotations

import base64
import datetime as _dt
import inspect
import json
import uuid

import attrs
import pytest

import messagebus.consumer
from messagebus import Command, Metadata, Serializer
from messagebus.consumer import BadEntryError, StreamEntry, parse_entry, raw_data

pytest.importorskip("redis")

from messagebus.redis._consumer import _stream_batches


@attrs.frozen
class Ship(Command[None], name="unit.Ship"):
    order: str


SERIALIZER = Serializer([Ship])
METADATA = Metadata(
    uuid.UUID(int=1), uuid.UUID(int=1), None, _dt.datetime(2024, 5, 1, tzinfo=_dt.timezone.utc)
)


def entry(**fields: str) -> StreamEntry:
    base = {
        "id": str(METADATA.message_id),
        "name": "unit.Ship",
        "version": "1",
        "payload": json.dumps({"order": "o1"}),
        "metadata": json.dumps(SERIALIZER.dump_metadata(METADATA)),
        "key": "o1",
    }
    return StreamEntry("ships", "1-0", {**base, **fields}, 1)


def test_an_entry_gives_its_message_and_the_metadata_it_carried() -> None:
    assert (Ship("o1"), METADATA) == parse_entry(SERIALIZER, entry())


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"payload": "[" * 100_000}, "field 'payload' is not JSON"),
        ({"metadata": "{"}, "field 'metadata' is not JSON"),
        ({"metadata": "[]"}, "field 'metadata' is not a message's metadata"),
        ({"name": "unit.Other"}, "unknown message name 'unit.Other'"),
    ],
)
def test_an_entry_that_is_not_a_message_says_why(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(BadEntryError, match=f"^entry 1-0 of stream 'ships': {reason}"):
        parse_entry(SERIALIZER, entry(**fields))


def test_a_deleted_entry_says_so() -> None:
    with pytest.raises(BadEntryError, match="deleted from the stream while pending"):
        parse_entry(SERIALIZER, StreamEntry("ships", "1-0", {}, 2))


def test_raw_data_keeps_text_as_text_and_other_bytes_in_base64() -> None:
    raw = StreamEntry("s", "1-0", {b"name": b"x", b"\xff": b"\x00\xfe", b"k": b"\x80"}, 1)

    data = raw_data(raw)

    assert {
        "stream": "s",
        "entry_id": "1-0",
        "fields": {"name": "x"},
        "fields_base64": {
            base64.b64encode(b"\xff").decode(): base64.b64encode(b"\x00\xfe").decode(),
            base64.b64encode(b"k").decode(): base64.b64encode(b"\x80").decode(),
        },
    } == data


def test_streams_read_in_resp2_and_resp3_forms_are_the_same() -> None:
    fields = {b"a": b"1"}
    resp2 = [[b"s", [(b"1-0", fields), (b"2-0", None)]]]
    resp3 = {b"s": [[(b"1-0", fields), (b"2-0", None)]]}

    expected = [("s", [("1-0", fields), ("2-0", {})])]
    assert (expected, expected, []) == (
        _stream_batches(resp2),
        _stream_batches(resp3),
        _stream_batches(None),
    )


def test_the_consumer_module_exports_these_names_each_documented() -> None:
    assert [
        "AsyncConsumer",
        "AsyncReader",
        "BadEntryError",
        "Consumer",
        "ConsumerSummary",
        "Reader",
        "StreamEntry",
        "parse_entry",
        "raw_data",
    ] == messagebus.consumer.__all__
    for name in messagebus.consumer.__all__:
        assert inspect.getdoc(getattr(messagebus.consumer, name)), name


class _Reader:
    group = "g"
    consumer = "c"
    streams = ("s",)

    def read(self) -> list[StreamEntry]:
        return []

    def ack(self, entries: object) -> None:
        return None


class _AsyncStore:
    async def add(self, letter: object) -> None:
        return None


def test_a_sync_consumer_refuses_an_async_dead_letter_store() -> None:
    from messagebus import MessageBus, Registry
    from messagebus.consumer import Consumer

    bus = MessageBus(Registry())
    with pytest.raises(Exception, match=r"cannot await its dead-letter store's add\(\)"):
        Consumer(bus, _Reader(), dead_letters=_AsyncStore())


@pytest.mark.parametrize("max_deliveries", [0, -1])
def test_max_deliveries_must_be_at_least_one(max_deliveries: int) -> None:
    from messagebus import MessageBus, Registry
    from messagebus.consumer import Consumer
    from messagebus.observe import InMemoryDeadLetters

    bus = MessageBus(Registry(), dead_letters=InMemoryDeadLetters())
    with pytest.raises(
        ValueError, match=f"max_deliveries must be at least 1, not {max_deliveries}"
    ):
        Consumer(bus, _Reader(), max_deliveries=max_deliveries)
