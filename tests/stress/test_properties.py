"""Properties checked over many generated values: slow, so not among the unit tests.

Every field type of a message survives a JSON round trip (DESIGN.md §1), for
200 generated messages of the type ``tests/unit/test_serialization.py`` defines.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messagebus import Serializer
from tests.unit.test_serialization import Colour, Everything, Line, Priority, Size


def _through_json(data: Any) -> Any:
    return json.loads(json.dumps(data))


lines = st.builds(Line, sku=st.text(), price=st.decimals(allow_nan=False, allow_infinity=False))
everything = st.builds(
    Everything,
    text=st.text(),
    number=st.integers(),
    ratio=st.floats(allow_nan=False, allow_infinity=False),
    flag=st.booleans(),
    price=st.decimals(allow_nan=False, allow_infinity=False),
    day=st.dates(),
    moment=st.datetimes(timezones=st.timezones()),
    ident=st.uuids(),
    colour=st.sampled_from(Colour),
    size=st.sampled_from(Size),
    priority=st.sampled_from(Priority),
    numbers=st.lists(st.integers()).map(tuple),
    pair=st.tuples(st.text(), st.integers()),
    tags=st.frozensets(st.text()),
    maybe=st.none() | st.integers(),
    line=lines,
    lines=st.lists(lines, max_size=3).map(tuple),
    maybe_line=st.none() | lines,
)


def _with_fixed_offset(moment: datetime.datetime) -> datetime.datetime:
    """The same wall time and UTC offset, in a fixed-offset zone (what JSON can carry).

    A datetime in a named zone at a repeated hour never compares equal to one in
    another zone, so the loaded value is compared with this instead.
    """
    offset = moment.utcoffset()
    assert offset is not None
    return moment.replace(tzinfo=datetime.timezone(offset), fold=0)


def _field_types(message: Everything) -> list[type]:
    return [type(getattr(message, field.name)) for field in attrs.fields(Everything)]


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(everything)
def test_every_field_type_survives_a_json_round_trip(message: Everything) -> None:
    serializer = Serializer([Everything])
    dumped = serializer.dump(message)

    loaded = serializer.load(_through_json(dumped))

    assert dumped == _through_json(dumped)
    assert attrs.evolve(message, moment=_with_fixed_offset(message.moment)) == loaded
    assert _field_types(message) == _field_types(loaded)  # an enum member, not its value
    assert message.moment.utcoffset() == loaded.moment.utcoffset()
    assert dumped == serializer.dump(loaded)
