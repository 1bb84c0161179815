"""Readable differences between lists of messages, for failing asserts.

A message's repr is Python that re-creates it, one line per message, so a
line diff (``difflib.ndiff``, whose ``?`` lines point at the characters that
differ) shows which message, and which field of it, is not what was expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def diff_lines(
    expected: Sequence[object],
    actual: Sequence[object],
    *,
    expected_label: str = "expected",
    actual_label: str = "actual",
) -> list[str]:
    """The lines of a diff of two lists, one item (its repr) a line."""
    lines = difflib.ndiff([repr(item) for item in expected], [repr(item) for item in actual])
    return [f"(- {expected_label}, + {actual_label})", *(line.rstrip("\n") for line in lines)]


def indent(lines: Iterable[str], prefix: str = "  ") -> str:
    """The lines joined, each with ``prefix`` before it."""
    return "\n".join(prefix + line if line else line for line in lines)


def plural(count: int, noun: str) -> str:
    """``"1 event"``, ``"2 events"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
