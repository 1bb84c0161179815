"""Write src/messagebus/_attempts_sync.py from _attempts_async.py.

The sync and the async bus share one implementation of handler attempts and
retries: it is written once, async, and the sync module is generated from it
by removing ``async`` and ``await`` (as httpcore does with unasync).

    python scripts/generate_sync.py          # write the sync module
    python scripts/generate_sync.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "messagebus"
SOURCE = PACKAGE / "_attempts_async.py"
TARGET = PACKAGE / "_attempts_sync.py"

HEADER = '''"""Handler attempts and retries, for the sync bus.

GENERATED from ``_attempts_async.py`` by ``scripts/generate_sync.py``: do not
edit; edit the async source and run ``make generate``.
"""
'''

# Order matters: the longest, most specific patterns first.
REPLACEMENTS = [
    (r"Awaitable\[(Outcome|object|None)\]", r"\1"),
    (r"from collections\.abc import Awaitable, Callable", "from collections.abc import Callable"),
    (r"\.next_wait_async\(\)", ".next_wait()"),
    (r"\basync def\b", "def"),
    (r"\bawait ", ""),
]


def generate() -> str:
    text = SOURCE.read_text(encoding="utf-8")
    docstring_end = text.index('"""', 3) + 3
    text = HEADER + "\n" + text[docstring_end:].lstrip("\n")
    for pattern, replacement in REPLACEMENTS:
        text = re.sub(pattern, replacement, text)
    return text


def main(argv: list[str]) -> int:
    expected = generate()
    if "--check" in argv:
        actual = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if actual != expected:
            print(f"{TARGET.name} is out of date: run `make generate`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
