"""Sensitive fields stay hidden wherever data is shown: one walk of a message type decides."""

from __future__ import annotations

import attrs
import pytest

from messagebus import (
    Command,
    InvalidMessageDataError,
    MessageBus,
    NoHandlerError,
    Registry,
    Serializer,
    sensitive,
)
from messagebus._sensitive import field_types, holds_sensitive, path_is_sensitive, redact
from messagebus.replay import replay

SECRET = "4111111111111111"


@attrs.frozen
class Card:
    number: str = sensitive()
    holder: str = "Ada"


@attrs.frozen
class Pin:
    pin: str = sensitive()


@attrs.frozen
class Pay(Command):
    cards: dict[str, Card] = attrs.field(factory=dict)
    either: Card | Pin | None = None
    many: tuple[Card, ...] = ()


def test_a_nested_attrs_class_in_a_dict_a_union_or_a_tuple_is_redacted_in_the_repr() -> None:
    message = Pay(cards={"main": Card(SECRET)}, either=Pin("1234"), many=(Card(SECRET),))

    shown = repr(message)

    assert SECRET not in shown
    assert "1234" not in shown
    expected = (
        "Pay(cards={'main': Card(number='[redacted]', holder='Ada')}, "
        "either=Pin(pin='[redacted]'), many=(Card(number='[redacted]', holder='Ada'),))"
    )
    assert expected == shown


def test_a_nested_class_printed_alone_hides_its_sensitive_field_once_registered() -> None:
    Serializer([Pay])

    assert "Card(number='[redacted]', holder='Ada')" == repr(Card(SECRET))


def test_no_handler_error_does_not_show_a_nested_sensitive_field() -> None:
    bus = MessageBus(Registry())

    with pytest.raises(NoHandlerError) as caught:
        bus.handle(Pay(cards={"main": Card(SECRET)}))

    assert SECRET not in str(caught.value)


def test_the_log_payload_redacts_dict_values_and_every_member_of_a_union() -> None:
    serializer = Serializer([Pay])
    message = Pay(cards={"main": Card(SECRET)}, either=Pin("1234"), many=(Card(SECRET),))

    payload = serializer.dump_payload(message, redact=True)

    expected = {
        "cards": {"main": {"number": "[redacted]", "holder": "Ada"}},
        "either": {"pin": "[redacted]"},
        "many": [{"number": "[redacted]", "holder": "Ada"}],
    }
    assert expected == payload
    assert expected == serializer.redact_payload("Pay", serializer.dump_payload(message))


def test_a_deserialisation_error_names_the_sensitive_field_without_its_value() -> None:
    serializer = Serializer([Pay])

    with pytest.raises(InvalidMessageDataError) as caught:
        serializer.load_payload("Pay", {"cards": {"main": {"number": 4111111111111111}}})

    assert "4111111111111111" not in str(caught.value)
    assert ["invalid value (sensitive: not shown) @ Pay.cards['main'].number"] == list(
        caught.value.errors
    )


def test_replay_reports_a_bad_sensitive_value_without_showing_it() -> None:
    registry = Registry()
    registry.register(_pay)
    bus = MessageBus(registry)
    line = (
        '{"message_name": "Pay", "message_id": "7d3c4e7e-0e9b-4f55-9d5e-8bb7c0a2b0a1", '
        '"correlation_id": "7d3c4e7e-0e9b-4f55-9d5e-8bb7c0a2b0a1", '
        '"created_at": "2026-01-01T00:00:00+00:00", '
        '"payload": {"either": {"pin": 1234}}}'
    )

    report = replay([line], bus)

    assert 1 == len(report.problems)
    assert "1234" not in str(report.problems[0])
    assert "Pay.either.pin" in str(report.problems[0])


def _pay(command: Pay) -> None:
    pass


def test_one_walk_decides_what_is_sensitive() -> None:
    assert holds_sensitive(Pay)
    assert holds_sensitive(dict[str, Card])
    assert not holds_sensitive(dict[str, int])
    assert path_is_sensitive(Pay, ".many[3].number")
    assert path_is_sensitive(Pay, ".either.pin")
    assert not path_is_sensitive(Pay, ".cards['x'].holder")


def test_redact_payload_of_an_unknown_name_or_a_type_without_secrets_is_the_payload() -> None:
    serializer = Serializer([Pay])
    payload = {"x": 1}

    assert payload is serializer.redact_payload("Unknown", payload)
    assert payload is redact(dict[str, int], payload)


@attrs.frozen
class Pair:
    first: Card
    second: int


def test_fixed_tuples_and_values_that_are_not_data_of_the_type_are_walked_safely() -> None:
    assert [{"number": "[redacted]"}, 5] == redact(tuple[Card, int], [{"number": "1"}, 5])
    assert "not a dict" == redact(Card, "not a dict")
    assert 7 == redact(Card | None, 7)
    assert not path_is_sensitive(Pair, ".second.anything")
    assert path_is_sensitive(Pair, ".first.number")


def test_a_type_whose_annotations_cannot_be_resolved_has_none_known() -> None:
    @attrs.frozen
    class Odd:
        value: NoSuchType  # type: ignore[name-defined]  # noqa: F821

    assert {} == field_types(Odd)
    assert not holds_sensitive(Odd)
