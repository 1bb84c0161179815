"""Bad input is refused with an error of its own type that names the culprit,
and a refusal loses nothing: the registry is as it was before.

Bad input to a bus (what is not a message, a command without a handler, a
parameter that nothing provides) is in the specification, on both buses:
``tests/unit/spec/test_03_dispatch.py`` and ``tests/unit/spec/test_02_wiring.py``.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import structlog

from messagebus import (
    Command,
    DuplicateHandlerError,
    Event,
    InvalidMessageDataError,
    MessageBus,
    MissingAnnotationError,
    Registry,
    UnknownMessageError,
)


@attrs.frozen
class OrderLine:
    sku: str
    qty: int


@attrs.frozen
class Allocate(Command[str]):
    orderid: str
    line: OrderLine
    tags: tuple[str, ...] = ()


@attrs.frozen
class Deallocate(Command[None]):
    orderid: str


@attrs.frozen
class Allocated(Event):
    orderid: str


@attrs.frozen
class PlainOrder:
    """An attrs class that is neither a Command nor an Event."""

    orderid: str


def allocate(command: Allocate) -> str:
    return "b1"


def deallocate(command: Deallocate) -> None:
    pass


def also_deallocate(command: Deallocate) -> None:
    pass


def on_allocated(event: Allocated) -> None:
    pass


def quiet_logger() -> Any:
    return structlog.wrap_logger(None, processors=[structlog.testing.LogCapture()])


@pytest.fixture
def bus() -> MessageBus:
    registry = Registry()
    registry.register(allocate)
    registry.register(on_allocated)
    return MessageBus(registry, logger=quiet_logger())


def snapshot(registry: Registry) -> tuple[dict[Any, Any], dict[Any, Any]]:
    return dict(registry.commands), dict(registry.events)


# -- registration ----------------------------------------------------------------


def no_annotation(command) -> None:  # type: ignore[no-untyped-def]
    pass


def not_a_message_annotation(command: int) -> None:
    pass


def unresolvable_annotation(command: NoSuchMessage) -> None:  # type: ignore[name-defined]  # noqa: F821
    pass


def no_parameter() -> None:
    pass


@pytest.mark.parametrize(
    ("handler", "culprits"),
    [
        pytest.param(no_annotation, ["no_annotation", "'command'", "no type annotation"]),
        pytest.param(not_a_message_annotation, ["not_a_message_annotation", "'command'", "int"]),
        pytest.param(unresolvable_annotation, ["unresolvable_annotation", "NoSuchMessage"]),
        pytest.param(no_parameter, ["no_parameter", "first positional parameter"]),
    ],
)
def test_a_handler_whose_message_type_cannot_be_found_is_refused_naming_it(
    handler: Any, culprits: list[str]
) -> None:
    registry = Registry()
    registry.register(allocate)
    before = snapshot(registry)

    with pytest.raises(MissingAnnotationError) as caught:
        registry.register(handler)

    assert [c for c in culprits if c not in str(caught.value)] == []
    assert handler is caught.value.handler
    assert snapshot(registry) == before


@pytest.mark.parametrize(
    ("message", "culprit"),
    [
        pytest.param(PlainOrder, "PlainOrder", id="a plain attrs class"),
        pytest.param([Allocated, int], "int", id="a list with a non-message type"),
    ],
)
def test_registering_for_what_is_not_a_message_type_is_refused_and_changes_nothing(
    message: Any, culprit: str
) -> None:
    registry = Registry()
    registry.register(on_allocated)
    before = snapshot(registry)

    with pytest.raises(MissingAnnotationError) as caught:
        registry.register(on_allocated, message=message)

    assert culprit in str(caught.value)
    assert "on_allocated" in str(caught.value)
    assert snapshot(registry) == before


def test_registering_for_a_message_instance_instead_of_its_class_is_refused_naming_it() -> None:
    registry = Registry()

    with pytest.raises(MissingAnnotationError) as caught:
        registry.register(on_allocated, message=Allocated("o1"))  # type: ignore[call-overload]

    assert "on_allocated" in str(caught.value)
    assert snapshot(registry) == ({}, {})


def test_a_second_handler_for_a_command_is_refused_naming_both_and_changes_nothing() -> None:
    registry = Registry()
    registry.register(deallocate)
    before = snapshot(registry)

    with pytest.raises(DuplicateHandlerError) as caught:
        registry.register(also_deallocate)

    message = str(caught.value)
    assert [
        name for name in ["Deallocate", ".deallocate", ".also_deallocate"] if name in message
    ] == ["Deallocate", ".deallocate", ".also_deallocate"]
    assert snapshot(registry) == before
    assert registry.commands[Deallocate].handler is deallocate


def test_a_refused_union_registers_none_of_its_members() -> None:
    registry = Registry()
    registry.register(deallocate)
    before = snapshot(registry)

    def on_anything(message: Allocated | Deallocate) -> None:
        pass

    with pytest.raises(DuplicateHandlerError, match="on_anything"):
        registry.register(on_anything)

    assert snapshot(registry) == before
    assert Allocated not in registry.events


def test_a_refused_include_changes_nothing() -> None:
    registry = Registry()
    registry.register(deallocate)
    before = snapshot(registry)
    other = Registry()
    other.register(allocate)  # new here: would be added first
    other.register(on_allocated)
    other.register(also_deallocate)  # a duplicate: refused
    with pytest.raises(DuplicateHandlerError, match="also_deallocate"):
        registry.include(other)

    assert snapshot(registry) == before


def test_a_refused_registration_leaves_a_working_registry() -> None:
    registry = Registry()
    handled: list[str] = []

    @registry.register
    def record(command: Deallocate) -> None:
        handled.append(command.orderid)

    with pytest.raises(DuplicateHandlerError):
        registry.register(also_deallocate)
    with pytest.raises(MissingAnnotationError):
        registry.register(no_annotation)

    MessageBus(registry, logger=quiet_logger()).handle(Deallocate("o1"))

    assert handled == ["o1"]


# -- deserialising ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Deallocate",  # a message type that this bus does not handle
        "NoSuchMessage",
        f"{__name__}.Allocate",  # a module path is not imported
        "os.system",
        "",
    ],
)
def test_deserialising_an_unknown_name_is_refused_naming_it(bus: MessageBus, name: str) -> None:
    with pytest.raises(UnknownMessageError) as caught:
        bus.serializer.load({"name": name, "version": 1, "payload": {"orderid": "o1"}})

    assert repr(name) in str(caught.value)
    assert name == caught.value.name


@pytest.mark.parametrize("name", [None, 42, ["Allocate"]])
def test_deserialising_a_name_that_is_not_a_str_is_refused_naming_it(
    bus: MessageBus, name: object
) -> None:
    with pytest.raises(UnknownMessageError) as caught:
        bus.serializer.load({"name": name, "version": 1, "payload": {}})

    assert repr(name) in str(caught.value)


def test_deserialising_a_message_that_is_not_an_object_is_refused_naming_its_type(
    bus: MessageBus,
) -> None:
    with pytest.raises(InvalidMessageDataError, match="not list"):
        bus.serializer.load(["Allocate", {"orderid": "o1"}])


def test_deserialising_another_version_is_refused_naming_message_and_version(
    bus: MessageBus,
) -> None:
    with pytest.raises(InvalidMessageDataError) as caught:
        bus.serializer.load({"name": "Allocated", "version": 2, "payload": {"orderid": "o1"}})

    assert "'Allocated'" in str(caught.value)
    assert "version 2" in str(caught.value)


GOOD = {"orderid": "o1", "line": {"sku": "LAMP", "qty": 3}}


@pytest.mark.parametrize(
    ("payload", "culprits"),
    [
        pytest.param([GOOD], ["'Allocate'", "object", "list"], id="a list instead of an object"),
        pytest.param("o1", ["'Allocate'", "object", "str"], id="a str instead of an object"),
        pytest.param(
            {**GOOD, "line": {"sku": "LAMP", "qty": "3"}},
            ["'Allocate'", "Allocate.line.qty", "int"],
            id="a str for an int field",
        ),
        pytest.param(
            {**GOOD, "line": {"sku": "LAMP", "qty": 2.5}},
            ["Allocate.line.qty", "int"],
            id="a float for an int field",
        ),
        pytest.param({**GOOD, "orderid": 5}, ["Allocate.orderid", "str"], id="an int for a str"),
        pytest.param({"orderid": "o1"}, ["Allocate.line", "missing"], id="a missing field"),
        pytest.param({**GOOD, "colour": "red"}, ["Allocate", "colour"], id="an extra field"),
        pytest.param({**GOOD, "tags": "ab"}, ["Allocate.tags"], id="a str for a tuple"),
        pytest.param({**GOOD, "line": ["LAMP", 3]}, ["Allocate.line"], id="a list for a nested"),
    ],
)
def test_a_payload_of_the_wrong_shape_is_refused_naming_message_and_field(
    bus: MessageBus, payload: object, culprits: list[str]
) -> None:
    with pytest.raises(InvalidMessageDataError) as caught:
        bus.serializer.load({"name": "Allocate", "version": 1, "payload": payload})

    assert [c for c in culprits if c not in str(caught.value)] == []
    assert caught.value.name == "Allocate"


def test_a_list_for_a_nested_object_says_an_object_was_expected(bus: MessageBus) -> None:
    with pytest.raises(InvalidMessageDataError) as caught:
        bus.serializer.load(
            {"name": "Allocate", "version": 1, "payload": {**GOOD, "line": ["LAMP", 3]}}
        )

    assert "unknown error" not in str(caught.value)
    assert "expected an object, got list ['LAMP', 3] @ Allocate.line" in str(caught.value)


def test_a_wrong_item_in_an_array_names_its_index(bus: MessageBus) -> None:
    with pytest.raises(InvalidMessageDataError) as caught:
        bus.serializer.load(
            {"name": "Allocate", "version": 1, "payload": {**GOOD, "tags": ["new", 7]}}
        )

    assert "Allocate.tags[1]" in str(caught.value)
