"""A log of ten thousand lines, one in a hundred of them garbage, replayed (DESIGN.md §6).

Every good line is replayed and every bad one reported by its number. The
application is the one of ``tests/unit/test_replay.py``.
"""

from __future__ import annotations

import pytest

from messagebus.replay import replay
from tests.unit.test_replay import Bank, bus_for, record


@pytest.mark.slow
def test_ten_thousand_lines_with_one_percent_garbage() -> None:
    log = [record("Open", {"account": str(n)}) for n in range(10_000)]
    garbage = set(range(50, 10_000, 100))  # 100 lines, 1%
    for index in garbage:
        log[index] = "\x00garbage " + log[index][: index % 40]

    again = Bank()
    report = replay(log, bus_for(again))

    assert sorted(n + 1 for n in garbage) == [p.line for p in report.problems]
    assert 9_900 == report.replayed == len(again.balances)
    assert 10_000 == report.read
    assert report.stopped_at is None
