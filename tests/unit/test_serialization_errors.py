"""Every decoding error is the library's own SerializationError, names the field, and is bounded."""

from __future__ import annotations

import json
import math

import attrs
import pytest

from messagebus import (
    Command,
    InvalidMessageDataError,
    MessageBus,
    Registry,
    SerializationError,
    Serializer,
    allow_nonfinite,
)
from messagebus.replay import replay


@attrs.frozen
class Measure(Command):
    qty: int
    ratio: float = 0.0
    spread: float = allow_nonfinite(default=0.0)


@pytest.fixture
def serializer() -> Serializer:
    return Serializer([Measure])


def test_bad_metadata_is_a_serialization_error_naming_the_field(serializer: Serializer) -> None:
    with pytest.raises(InvalidMessageDataError) as caught:
        serializer.load_metadata({"message_id": "not a uuid"})

    assert "metadata.message_id" in caught.value.errors[0]


def test_metadata_that_is_not_an_object_is_a_serialization_error(serializer: Serializer) -> None:
    with pytest.raises(SerializationError):
        serializer.load_metadata([1, 2])


def test_a_huge_value_is_cut_in_the_error(serializer: Serializer) -> None:
    huge = "x" * 10_000_000

    with pytest.raises(InvalidMessageDataError) as caught:
        serializer.load_payload("Measure", {"qty": huge})

    assert len(str(caught.value)) < 500
    assert "Measure.qty" in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        {"name": 10**5000, "version": 1, "payload": {"qty": 1}},
        {"name": "Measure", "version": 10**5000, "payload": {"qty": 1}},
    ],
    ids=["name", "version"],
)
def test_an_over_long_int_anywhere_is_a_bounded_serialization_error(
    serializer: Serializer, data: dict[str, object]
) -> None:
    with pytest.raises(SerializationError) as caught:
        serializer.load(data)

    assert len(str(caught.value)) < 500


def test_an_over_long_int_payload_value_is_a_bounded_serialization_error(
    serializer: Serializer,
) -> None:
    with pytest.raises(InvalidMessageDataError) as caught:
        serializer.load_payload("Measure", {"qty": 1, "ratio": 10**5000})

    assert len(str(caught.value)) < 500
    assert "Measure.ratio" in str(caught.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused(serializer: Serializer, value: float) -> None:
    with pytest.raises(InvalidMessageDataError) as caught:
        serializer.load_payload("Measure", json.loads(json.dumps({"qty": 1, "ratio": value})))

    assert "Measure.ratio" in str(caught.value)


def test_a_field_that_allows_them_takes_nan_and_infinities(serializer: Serializer) -> None:
    message = serializer.load_payload("Measure", {"qty": 1, "spread": math.inf})

    assert math.inf == message.spread  # type: ignore[attr-defined]


def test_bad_metadata_in_the_wire_form_names_the_message(serializer: Serializer) -> None:
    data = {"name": "Measure", "version": 1, "payload": {"qty": 1}, "metadata": {"x": 1}}

    with pytest.raises(InvalidMessageDataError) as caught:
        serializer.load_with_metadata(data)

    assert "Measure" == caught.value.name


def test_replay_reports_a_huge_bad_value_of_a_log_line_cut_short(serializer: Serializer) -> None:
    line = json.dumps(
        {"message_name": "Measure", "message_id": "x" * 2_000_000, "payload": {"qty": 1}}
    )

    report = replay([line], MessageBus(Registry()))

    (problem,) = report.problems
    assert len(str(problem)) < 300
    assert "message_id" in str(problem)


def test_a_field_that_allows_nonfinite_floats_still_checks_the_rest(
    serializer: Serializer,
) -> None:
    assert 2.5 == serializer.load_payload("Measure", {"qty": 1, "spread": 2.5}).spread  # type: ignore[attr-defined]
    with pytest.raises(InvalidMessageDataError, match=r"Measure\.spread"):
        serializer.load_payload("Measure", {"qty": 1, "spread": "inf"})
