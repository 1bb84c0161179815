"""Serializer: messages to JSON-safe data and back, exactly, strictly, and by registered name."""

from __future__ import annotations

import datetime
import enum
import json
import sys
import uuid
from decimal import Decimal
from typing import Any

import attrs
import pytest
import structlog

import messagebus
from messagebus import (
    Command,
    ConfigurationError,
    Event,
    InvalidMessageDataError,
    MessageBus,
    MessageNameConflictError,
    Metadata,
    Registry,
    Serializer,
    UnknownMessageError,
)

IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


class Colour(str, enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


@attrs.frozen
class Line:
    sku: str
    price: Decimal


@attrs.frozen
class Everything(Event, name="test.Everything", version=2):
    text: str
    number: int
    ratio: float
    flag: bool
    price: Decimal
    day: datetime.date
    moment: datetime.datetime
    ident: uuid.UUID
    colour: Colour
    size: Size
    priority: Priority
    numbers: tuple[int, ...]
    pair: tuple[str, int]
    tags: frozenset[str]
    maybe: int | None
    line: Line
    lines: tuple[Line, ...]
    maybe_line: Line | None


@attrs.frozen
class Allocate(Command[str]):
    orderid: str
    quantity: int
    placed_at: datetime.datetime
    skus: tuple[str, ...]


#: Every Unregistered ever constructed: the class must never be built from data.
CONSTRUCTED: list[object] = []


@attrs.frozen
class Unregistered(Event):
    target: str

    def __attrs_post_init__(self) -> None:
        CONSTRUCTED.append(self)


def _through_json(data: object) -> Any:
    return json.loads(json.dumps(data))


def _reload(serializer: Serializer, message: Any, metadata: Metadata | None = None) -> Any:
    return serializer.load(_through_json(serializer.dump(message, metadata)))


def _everything(**changes: Any) -> Everything:
    fields: dict[str, Any] = {
        "text": "lamp",
        "number": 3,
        "ratio": 0.1,
        "flag": True,
        "price": Decimal("1.10"),
        "day": datetime.date(2024, 2, 29),
        "moment": datetime.datetime(2024, 3, 1, 9, 30, 15, 250, tzinfo=IST),
        "ident": uuid.UUID("6f1c2a4e-8d1b-4c3e-9a7f-0b2d3e4f5a6b"),
        "colour": Colour.RED,
        "size": Size.LARGE,
        "priority": Priority.HIGH,
        "numbers": (3, 1, 2),
        "pair": ("b1", 7),
        "tags": frozenset({"fragile", "express"}),
        "maybe": None,
        "line": Line("LAMP", Decimal("9.990")),
        "lines": (Line("SOFA", Decimal("100")), Line("RUG", Decimal("0.50"))),
        "maybe_line": None,
    }
    fields.update(changes)
    return Everything(**fields)


# Round trip (of every field type, with generated values: tests/stress/test_properties.py)


def test_round_trip_of_an_example_message_is_exact() -> None:
    message = _everything(maybe=4, maybe_line=Line("LAMP", Decimal("1")))

    assert message == _reload(Serializer([Everything]), message)


def test_decimal_keeps_its_digits() -> None:
    loaded = _reload(Serializer([Everything]), _everything(price=Decimal("1.10")))

    assert "1.10" == str(loaded.price)


def test_datetime_keeps_its_utc_offset() -> None:
    moment = datetime.datetime(2024, 3, 1, 9, 30, tzinfo=IST)

    loaded = _reload(Serializer([Everything]), _everything(moment=moment))

    assert datetime.timedelta(hours=5, minutes=30) == loaded.moment.utcoffset()
    assert moment == loaded.moment


def test_frozenset_dumps_in_a_stable_order() -> None:
    serializer = Serializer([Everything])

    dumped = serializer.dump(_everything(tags=frozenset({"b", "c", "a"})))

    assert ["a", "b", "c"] == dumped["payload"]["tags"]


def test_plain_enum_loads_as_its_member() -> None:
    loaded = _reload(Serializer([Everything]), _everything(priority=Priority.LOW))

    assert Priority.LOW is loaded.priority


def test_str_enum_loads_as_its_member() -> None:
    loaded = _reload(Serializer([Everything]), _everything(colour=Colour.GREEN))

    assert Colour.GREEN is loaded.colour


def test_int_enum_loads_as_its_member() -> None:
    loaded = _reload(Serializer([Everything]), _everything(size=Size.SMALL))

    assert Size.SMALL is loaded.size


def test_str_enum_dumps_as_a_plain_str() -> None:
    dumped = Serializer([Everything]).dump(_everything(colour=Colour.RED))

    assert "red" == dumped["payload"]["colour"]
    assert str is type(dumped["payload"]["colour"])


def _everything_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = _through_json(Serializer([Everything]).dump(_everything()))
    data["payload"].update(changes)
    return data


def _assert_refused(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidMessageDataError) as caught:
        Serializer([Everything]).load(data)

    assert "test.Everything" == caught.value.name
    assert any(field in line for line in caught.value.errors)


def test_unknown_plain_enum_value_is_refused() -> None:
    _assert_refused(_everything_data(priority="urgent"), "priority")


def test_unknown_str_enum_value_is_refused() -> None:
    _assert_refused(_everything_data(colour="blue"), "colour")


def test_unknown_int_enum_value_is_refused() -> None:
    _assert_refused(_everything_data(size=7), "size")


def test_bool_is_not_an_int_enum_value() -> None:
    _assert_refused(_everything_data(size=True), "size")


def test_int_is_not_a_str_enum_value() -> None:
    _assert_refused(_everything_data(colour=1), "colour")


def test_payload_survives_json_unchanged() -> None:
    payload = Serializer([Everything]).dump_payload(_everything(pair=("b1", 7)))

    assert payload == json.loads(json.dumps(payload))


def test_dump_loads_back_without_a_json_round_trip() -> None:
    serializer = Serializer([Everything])
    message = _everything()

    assert message == serializer.load(serializer.dump(message))


def test_message_loads_with_its_metadata() -> None:
    serializer = Serializer([Everything])
    message = _everything()
    metadata = Metadata.new(causation_id=uuid.uuid4())

    loaded = serializer.load_with_metadata(_through_json(serializer.dump(message, metadata)))

    assert (message, metadata) == loaded


def test_message_dumped_without_metadata_loads_with_none() -> None:
    serializer = Serializer([Everything])
    message = _everything()

    loaded = serializer.load_with_metadata(_through_json(serializer.dump(message)))

    assert (message, None) == loaded


def test_wire_form_names_the_message_and_its_version() -> None:
    dumped = Serializer([Everything]).dump(_everything())

    assert ("test.Everything", 2) == (dumped["name"], dumped["version"])


# Strictness: each error names the message and the field


def _allocate_data(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "orderid": "o1",
        "quantity": 3,
        "placed_at": "2024-03-01T09:30:00+05:30",
        "skus": ["LAMP"],
    }
    payload.update(changes)
    return {"name": "Allocate", "version": 1, "payload": payload}


def _refusal(data: object) -> InvalidMessageDataError:
    with pytest.raises(InvalidMessageDataError) as caught:
        Serializer([Allocate]).load(data)
    return caught.value


def _assert_names(error: InvalidMessageDataError, field: str) -> None:
    assert "Allocate" == error.name
    assert "Allocate" in str(error)
    assert field in str(error)
    assert any(field in line for line in error.errors)


def test_valid_data_loads() -> None:
    expected = Allocate("o1", 3, datetime.datetime(2024, 3, 1, 9, 30, tzinfo=IST), ("LAMP",))

    assert expected == Serializer([Allocate]).load(_allocate_data())


def test_numeric_str_is_not_an_int() -> None:
    _assert_names(_refusal(_allocate_data(quantity="3")), "quantity")


def test_fractional_float_is_not_an_int() -> None:
    _assert_names(_refusal(_allocate_data(quantity=2.5)), "quantity")


def test_bool_is_not_an_int() -> None:
    _assert_names(_refusal(_allocate_data(quantity=True)), "quantity")


def test_int_is_not_a_str() -> None:
    _assert_names(_refusal(_allocate_data(orderid=5)), "orderid")


def test_naive_datetime_is_not_an_aware_one() -> None:
    _assert_names(_refusal(_allocate_data(placed_at="2024-03-01T09:30:00")), "placed_at")


def test_str_is_not_a_tuple_and_is_not_split_into_characters() -> None:
    _assert_names(_refusal(_allocate_data(skus="LAMP")), "skus")


def test_unknown_extra_field_is_refused() -> None:
    _assert_names(_refusal(_allocate_data(discount=5)), "discount")


def test_missing_field_is_refused() -> None:
    data = _allocate_data()
    del data["payload"]["orderid"]

    _assert_names(_refusal(data), "orderid")


def test_other_version_is_refused() -> None:
    data = _allocate_data()
    data["version"] = 2

    error = _refusal(data)

    assert "Allocate" == error.name
    assert "version" in str(error)


def test_wire_data_without_a_version_is_refused() -> None:
    data = _allocate_data()
    del data["version"]

    error = _refusal(data)

    assert "Allocate" == error.name
    assert "version" in str(error)


@pytest.mark.parametrize("text", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_a_decimal_that_is_not_a_finite_number_is_refused(text: str) -> None:
    serializer = Serializer([Priced])

    with pytest.raises(InvalidMessageDataError, match="price") as caught:
        serializer.load({"name": "Priced", "version": 1, "payload": {"price": text}})
    assert "Priced" == caught.value.name


def test_payload_that_is_not_an_object_is_refused() -> None:
    data = _allocate_data()
    data["payload"] = [["orderid", "o1"]]

    error = _refusal(data)

    assert "Allocate" == error.name
    assert "payload" in str(error)


@attrs.frozen
class Priced(Event):
    price: Decimal


# A class and its fields (a request's body), typed


def test_a_registered_class_loads_from_its_fields_with_the_same_checks() -> None:
    serializer = Serializer([Allocate])
    payload = _allocate_data()["payload"]

    loaded = serializer.load(Allocate, payload)

    assert Allocate("o1", 3, datetime.datetime(2024, 3, 1, 9, 30, tzinfo=IST), ("LAMP",)) == loaded
    with pytest.raises(InvalidMessageDataError) as caught:
        serializer.load(Allocate, {**payload, "quantity": "3"})
    _assert_names(caught.value, "Allocate.quantity")
    with pytest.raises(InvalidMessageDataError, match="payload must be an object"):
        serializer.load(Allocate, ["o1"])


def test_an_unregistered_class_is_refused_naming_it() -> None:
    with pytest.raises(UnknownMessageError) as caught:
        Serializer([Allocate]).load(Unregistered, {"target": "x"})

    assert "unknown message name 'Unregistered'; registered names: Allocate" == str(caught.value)


def test_a_class_without_its_fields_or_given_by_name_says_how_to_load_it() -> None:
    serializer = Serializer([Allocate])

    with pytest.raises(TypeError, match=r"load\(Allocate, payload\)"):
        serializer.load(Allocate)
    with pytest.raises(TypeError, match=r"use load\(Allocate, payload\)"):
        serializer.load_payload(Allocate, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a message class"):
        serializer.load("Allocate", {})


# Only registered types, by name


def test_unknown_name_is_an_unknown_message_error_naming_it() -> None:
    with pytest.raises(UnknownMessageError) as caught:
        Serializer([Allocate]).load({"name": "Deallocate", "version": 1, "payload": {}})

    assert "Deallocate" == caught.value.name
    assert "'Deallocate'" in str(caught.value)


def test_data_naming_an_importable_function_constructs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # wave.open is a function of a module that the test makes sure is not imported yet.
    monkeypatch.delitem(sys.modules, "wave", raising=False)

    with pytest.raises(UnknownMessageError) as caught:
        Serializer([Allocate]).load({"name": "wave.open", "version": 1, "payload": {}})

    assert "wave.open" == caught.value.name
    assert "wave" not in sys.modules


@pytest.mark.parametrize(
    "name",
    [Unregistered.__qualname__, f"{__name__}.{Unregistered.__qualname__}"],
    ids=["qualname", "module-and-qualname"],
)
def test_data_naming_an_unregistered_message_type_constructs_nothing(name: str) -> None:
    CONSTRUCTED.clear()
    data = {"name": name, "version": 1, "payload": {"target": "x"}}

    with pytest.raises(UnknownMessageError):
        Serializer([Allocate]).load(data)

    assert [] == CONSTRUCTED


def test_data_naming_a_module_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "this", raising=False)

    with pytest.raises(UnknownMessageError):
        Serializer([Allocate]).load({"name": "this.s", "version": 1, "payload": {}})

    assert "this" not in sys.modules


# Registration


def test_two_types_with_one_name_conflict_naming_both() -> None:
    @attrs.frozen
    class Reserve(Command[None], name="Allocate"):
        orderid: str

    serializer = Serializer([Allocate])

    with pytest.raises(MessageNameConflictError) as caught:
        serializer.register(Reserve)

    assert "Allocate" == caught.value.name
    assert (Allocate, Reserve) == caught.value.types
    assert Allocate.__qualname__ in str(caught.value)
    assert Reserve.__qualname__ in str(caught.value)


def test_registering_a_type_twice_is_harmless() -> None:
    serializer = Serializer([Allocate])

    serializer.register(Allocate)

    assert {"Allocate": Allocate} == dict(serializer.names)


def test_message_type_that_is_not_an_attrs_class_is_a_configuration_error() -> None:
    class Cancel(Command[None]):
        pass

    with pytest.raises(ConfigurationError, match="Cancel"):
        Serializer([Cancel])


def test_attrs_class_that_is_not_a_message_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Line"):
        Serializer([Line])  # type: ignore[list-item]


def test_names_are_the_registered_types_by_name() -> None:
    serializer = Serializer([Allocate, Everything])

    assert {"Allocate": Allocate, "test.Everything": Everything} == dict(serializer.names)


def test_names_are_read_only() -> None:
    serializer = Serializer([Allocate])

    with pytest.raises(TypeError):
        serializer.names["Everything"] = Everything  # type: ignore[index]

    assert {"Allocate": Allocate} == dict(serializer.names)


def test_bus_serializer_knows_the_types_its_registry_handles() -> None:
    registry = Registry()

    @registry.register
    def allocate(command: Allocate) -> str:
        return command.orderid

    bus = MessageBus(registry)

    assert {"Allocate": Allocate} == dict(bus.serializer.names)
    assert Serializer([Allocate]).load(_allocate_data()) == bus.serializer.load(_allocate_data())


# Sensitive fields


@attrs.frozen
class Card:
    number: str = messagebus.sensitive()
    holder: str = "ada"


@attrs.frozen
class Paid(Event):
    amount: int
    card: Card
    cards: tuple[Card, ...] = ()
    pin: str = messagebus.sensitive(default="0000")


def test_sensitive_fields_are_redacted_on_request_even_when_nested() -> None:
    serializer = Serializer([Paid])
    paid = Paid(3, Card("4111"), (Card("5555"),), "1234")

    redacted = serializer.dump_payload(paid, redact=True)

    assert {
        "amount": 3,
        "card": {"number": "[redacted]", "holder": "ada"},
        "cards": [{"number": "[redacted]", "holder": "ada"}],
        "pin": "[redacted]",
    } == redacted
    assert paid == serializer.load(serializer.dump(paid))  # data keeps them


@attrs.frozen
class Folder:
    name: str
    files: tuple[File, ...] = ()


@attrs.frozen
class File:
    name: str
    shortcut: Folder | None = None  # classes that hold each other, before the sensitive field
    key: str = messagebus.sensitive(default="")


@attrs.frozen
class Shared(Event):
    folder: Folder


def test_sensitive_fields_are_found_in_classes_that_hold_each_other() -> None:
    serializer = Serializer([Shared])
    shared = Shared(Folder("docs", (File("a", Folder("b"), "k1"),)))

    assert {
        "folder": {
            "name": "docs",
            "files": [{"name": "a", "shortcut": {"name": "b", "files": []}, "key": "[redacted]"}],
        }
    } == serializer.dump_payload(shared, redact=True)


def test_the_log_line_of_an_attempt_never_holds_a_sensitive_field_in_clear() -> None:
    registry = messagebus.Registry()
    registry.register(lambda event: None, message=Paid, uow=False)

    with structlog.testing.capture_logs() as logs:
        messagebus.MessageBus(registry).handle(Paid(3, Card("4111"), pin="1234"))

    [line] = logs
    assert "4111" not in repr(line)
    assert "1234" not in repr(line)
