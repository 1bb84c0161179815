"""Messages: Command and Event, their names and versions, their repr, and Metadata."""

from __future__ import annotations

import datetime
import enum
import json
import os
import typing
import uuid
from decimal import Decimal
from uuid import UUID

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from messagebus import (
    Command,
    Event,
    Message,
    Metadata,
    Serializer,
    UnknownMessageError,
    message_name,
    message_version,
    messages,
    sensitive,
)
from messagebus.messages import new_message_id

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

UTC = datetime.timezone.utc


@attrs.frozen
class Allocate(Command[str]):
    orderid: str
    sku: str
    qty: int


@attrs.frozen
class Allocated(Event, name="allocation.Allocated", version=2):
    orderid: str
    batchref: str


@attrs.frozen
class OutOfStock(Event):
    sku: str


@attrs.frozen
class BackOrdered(OutOfStock):
    """A subclass that gives no name of its own."""


@attrs.frozen
class Stocked(Event, name="stock.Stocked", version=3):
    sku: str


@attrs.frozen
class Restocked(Stocked):
    """A subclass of a named, versioned event that gives neither."""


class Warehouse:
    @attrs.frozen
    class Opened(Event):
        code: str


@attrs.frozen
class Address:
    street: str
    city: str


@attrs.frozen
class Shipment(Event):
    reference: str
    parcels: int
    price: Decimal
    shipment_id: UUID
    shipped_at: datetime.datetime
    skus: tuple[str, ...]
    tags: frozenset[str]
    address: Address
    note: str | None
    signed_by: Address | None


# Commands and events


def test_a_message_is_a_frozen_attrs_class_compared_by_value() -> None:
    command = Allocate("o1", "LAMP", 10)

    assert Allocate("o1", "LAMP", 10) == command
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        command.qty = 11  # type: ignore[misc]


def test_commands_and_events_are_messages() -> None:
    assert isinstance(Allocate("o1", "LAMP", 10), Command)
    assert isinstance(Allocate("o1", "LAMP", 10), Message)
    assert isinstance(OutOfStock("LAMP"), Event)
    assert isinstance(OutOfStock("LAMP"), Message)
    assert not isinstance(OutOfStock("LAMP"), Command)


def test_command_is_generic_in_its_result_type() -> None:
    assert Command is typing.get_origin(Command[str])
    assert (Command[str],) == Allocate.__orig_bases__  # type: ignore[attr-defined]
    assert "Allocate" == message_name(Allocate)


# Names and versions


def test_default_name_is_the_qualified_name() -> None:
    assert "OutOfStock" == message_name(OutOfStock)


def test_default_name_of_a_nested_class_is_its_qualified_name() -> None:
    assert "Warehouse.Opened" == message_name(Warehouse.Opened)


def test_default_version_is_1() -> None:
    assert 1 == message_version(OutOfStock)


def test_name_and_version_are_given_as_class_keywords() -> None:
    assert "allocation.Allocated" == message_name(Allocated)
    assert 2 == message_version(Allocated)


def test_name_and_version_of_a_message_are_those_of_its_type() -> None:
    event = Allocated("o1", "b1")

    assert "allocation.Allocated" == message_name(event)
    assert 2 == message_version(event)


def test_given_name_survives_the_slotted_class_rebuild_by_attrs() -> None:
    # attrs.frozen replaces the class with a slotted copy: the name must carry over.
    assert "__slots__" in Allocated.__dict__
    assert "allocation.Allocated" == message_name(Allocated)
    assert 2 == message_version(Allocated)


def test_a_class_can_be_renamed_without_breaking_its_stored_messages() -> None:
    stored = json.loads(json.dumps(Serializer([Allocated]).dump(Allocated("o1", "b1"))))

    @attrs.frozen
    class LineAllocated(Event, name="allocation.Allocated", version=2):
        """Allocated, renamed in a later release of the code."""

        orderid: str
        batchref: str

    loaded = Serializer([LineAllocated]).load(stored)

    assert LineAllocated("o1", "b1") == loaded  # attrs compares the class and every field


def test_a_class_renamed_without_a_given_name_no_longer_reads_its_stored_messages() -> None:
    stored = Serializer([OutOfStock]).dump(OutOfStock("LAMP"))

    @attrs.frozen
    class RanOut(Event):
        sku: str

    with pytest.raises(UnknownMessageError) as caught:
        Serializer([RanOut]).load(stored)

    assert "OutOfStock" == caught.value.name


def test_subclass_without_its_own_name_gets_its_own_qualified_name() -> None:
    assert "BackOrdered" == message_name(BackOrdered)
    assert "OutOfStock" == message_name(OutOfStock)


def test_subclass_of_a_named_message_gets_its_own_name_and_version_1() -> None:
    assert ("Restocked", 1) == (message_name(Restocked), message_version(Restocked))
    assert ("stock.Stocked", 3) == (message_name(Stocked), message_version(Stocked))


def test_empty_name_is_a_type_error_naming_the_class() -> None:
    with pytest.raises(TypeError, match=r"\bBadlyNamed\b"):

        class BadlyNamed(Event, name=""):
            pass


def test_blank_name_is_a_type_error_naming_the_class() -> None:
    with pytest.raises(TypeError, match=r"\bBadlyNamed\b"):

        class BadlyNamed(Event, name="   "):
            pass


def test_name_that_is_not_a_str_is_a_type_error_naming_the_class() -> None:
    with pytest.raises(TypeError, match=r"\bBadlyNamed\b"):

        class BadlyNamed(Event, name=5):  # type: ignore[arg-type]
            pass


def test_version_0_is_a_type_error_naming_the_class() -> None:
    with pytest.raises(TypeError, match=r"\bBadlyVersioned\b"):

        class BadlyVersioned(Event, version=0):
            pass


def test_negative_version_is_a_type_error_naming_the_class() -> None:
    with pytest.raises(TypeError, match=r"\bBadlyVersioned\b"):

        class BadlyVersioned(Event, version=-1):
            pass


def test_bool_version_is_a_type_error_naming_the_class() -> None:
    with pytest.raises(TypeError, match=r"\bBadlyVersioned\b"):

        class BadlyVersioned(Event, version=True):
            pass


def test_str_version_is_a_type_error_naming_the_class() -> None:
    with pytest.raises(TypeError, match=r"\bBadlyVersioned\b"):

        class BadlyVersioned(Event, version="2"):  # type: ignore[arg-type]
            pass


# Repr

REPR_NAMESPACE = {
    "Address": Address,
    "Allocate": Allocate,
    "Decimal": Decimal,
    "Shipment": Shipment,
    "UUID": UUID,
    "datetime": datetime,
}


def _shipment(note: str | None, signed_by: Address | None) -> Shipment:
    return Shipment(
        reference="s-1",
        parcels=3,
        price=Decimal("1.10"),
        shipment_id=UUID("6f1c2a4e-8d1b-4c3e-9a7f-0b2d3e4f5a6b"),
        shipped_at=datetime.datetime(
            2024, 3, 1, 9, 30, 15, 250, tzinfo=datetime.timezone(datetime.timedelta(hours=5.5))
        ),
        skus=("LAMP", "SOFA"),
        tags=frozenset({"fragile", "express"}),
        address=Address("1 Main St", "Pune"),
        note=note,
        signed_by=signed_by,
    )


def test_repr_of_a_command_recreates_it() -> None:
    command = Allocate("o1", "LAMP", 10)

    assert command == eval(repr(command), REPR_NAMESPACE)


def test_repr_of_a_message_with_every_field_type_recreates_it() -> None:
    event = _shipment(note="leave at the door", signed_by=Address("2 High St", "Leeds"))

    recreated = eval(repr(event), REPR_NAMESPACE)

    assert event == recreated
    assert "1.10" == str(recreated.price)
    assert event.shipped_at.utcoffset() == recreated.shipped_at.utcoffset()


def test_repr_of_a_message_with_empty_optional_fields_recreates_it() -> None:
    event = _shipment(note=None, signed_by=None)

    assert event == eval(repr(event), REPR_NAMESPACE)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Painted(Event):
    colour: Colour
    also: tuple[Colour, ...] = ()


def test_repr_of_an_enum_field_recreates_it() -> None:
    event = Painted(Colour.RED, (Colour.BLUE,))

    assert "Painted(colour=Colour.RED, also=(Colour.BLUE,))" == repr(event)
    assert event == eval(repr(event), {"Painted": Painted, "Colour": Colour})


def test_a_repr_the_user_wrote_is_kept() -> None:
    @attrs.frozen
    class Shouted(Event):
        text: str

        def __repr__(self) -> str:
            return self.text.upper()

    assert "HI" == repr(Shouted("hi"))


# Metadata


def test_new_metadata_has_a_version_4_uuid() -> None:
    metadata = Metadata.new()

    assert 4 == metadata.message_id.version
    assert uuid.RFC_4122 == metadata.message_id.variant


def test_new_metadata_is_its_own_correlation_without_a_cause() -> None:
    metadata = Metadata.new()

    assert metadata.message_id == metadata.correlation_id
    assert metadata.causation_id is None


def test_new_metadata_keeps_a_given_correlation_and_causation() -> None:
    correlation_id, causation_id = uuid.uuid4(), uuid.uuid4()

    metadata = Metadata.new(correlation_id=correlation_id, causation_id=causation_id)

    assert (correlation_id, causation_id) == (metadata.correlation_id, metadata.causation_id)
    assert metadata.message_id not in (correlation_id, causation_id)


def test_new_metadata_is_created_now_in_utc() -> None:
    before = datetime.datetime.now(UTC)
    metadata = Metadata.new()
    after = datetime.datetime.now(UTC)

    assert datetime.timedelta(0) == metadata.created_at.utcoffset()
    assert before <= metadata.created_at <= after


def test_metadata_refuses_a_naive_creation_time() -> None:
    message_id = uuid.uuid4()

    with pytest.raises(ValueError, match="created_at"):
        Metadata(message_id, message_id, None, datetime.datetime(2024, 1, 1, 12, 0))


def test_caused_metadata_keeps_the_correlation_and_names_its_cause() -> None:
    parent = Metadata.new(correlation_id=uuid.uuid4())
    child_id = new_message_id()
    created_at = datetime.datetime.now(UTC)

    child = parent.caused(child_id, created_at)

    assert Metadata(child_id, parent.correlation_id, parent.message_id, created_at) == child


# Message ids


def test_message_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_message_id() for _ in range(10_000)]

    assert 10_000 == len(set(ids))
    assert {4} == {message_id.version for message_id in ids}
    assert {uuid.RFC_4122} == {message_id.variant for message_id in ids}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_message_ids_differ_between_a_forked_child_and_its_parent() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id, then leave without running pytest's teardown
        status = 1
        try:
            os.close(read_end)
            os.write(write_end, str(new_message_id()).encode())
            os.close(write_end)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    parent_id = new_message_id()  # the same position in the sequence as the child's id
    with os.fdopen(read_end, "rb") as pipe:
        child_id = UUID(pipe.read().decode())
    _, wait_status = os.waitpid(pid, 0)

    assert 0 == os.waitstatus_to_exitcode(wait_status)
    assert 4 == child_id.version
    assert parent_id != child_id


def test_a_sensitive_field_never_shows_in_clear_in_a_repr() -> None:
    @attrs.frozen
    class Pay(Command[None]):
        amount: int
        card: str = sensitive()

    assert "Pay(amount=3, card='[redacted]')" == repr(Pay(3, "4111-1111-1111-1111"))


@given(st.integers(min_value=0, max_value=2**80))
def test_the_logged_text_of_an_id_is_the_ids_own(sequence: int) -> None:
    assert str(messages._id_from_sequence(sequence)) == messages._id_text_from_sequence(sequence)


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))  # until the year 2100
def test_the_logged_text_of_a_time_is_its_isoformat(ns: int) -> None:
    created_at = messages._utc_from_ns(ns)

    assert created_at.isoformat() == messages._iso_from_ns(ns)
    assert created_at.isoformat().replace("+00:00", "Z") == messages._iso_from_ns(ns, "Z")
    assert ns // 1000 == (created_at - EPOCH) // datetime.timedelta(microseconds=1)


def test_a_time_on_a_whole_second_is_written_without_a_fraction() -> None:
    assert "2026-11-23T10:00:00+00:00" == messages._iso_from_ns(1_795_428_000 * 10**9)
    assert "2026-11-23T10:00:00.000001+00:00" == messages._iso_from_ns(1_795_428_000 * 10**9 + 1000)
