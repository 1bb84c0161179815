"""Write the sync dispatch modules from their async sources.

``_dispatch_async.py`` -> ``_dispatch_sync.py``, ``_attempt_async.py`` -> ``_attempt_sync.py``.

The sync and the async bus share one dispatch path: it is written once,
async, and the sync module is generated from it by removing ``async`` and
``await`` (as httpcore does with unasync), then formatted by ruff.

    python scripts/generate_sync.py          # write the sync module
    python scripts/generate_sync.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "messagebus"
MODULES = {"_dispatch": "The dispatch path", "_attempt": "Handler attempts and runs"}

HEADER = '''"""{what} of the sync bus.

GENERATED from ``{source}`` by ``scripts/generate_sync.py``: do not
edit; edit the async source and run ``make generate``.
"""
'''

# Order matters: the longest, most specific patterns first.
REPLACEMENTS = [
    # A value that may be awaitable (a dead-letter store's add) is simply called.
    (
        r"async def _awaited\(value: Any\) -> Any:\n"
        r"    return await value if inspect.isawaitable\(value\) else value\n\n\n",
        "",
    ),
    (r"await _awaited\((.*)\)$", r"\1"),
    (r"^import inspect\n", ""),  # used by _awaited only
    (r"Awaitable\[(\w+)\]", r"\1"),
    (r"from collections\.abc import Awaitable, ", "from collections.abc import "),
    (r"\.next_wait_async\(\)", ".next_wait()"),
    (r"\bAsyncDispatch\b", "SyncDispatch"),
    (r"\b_attempt_async\b", "_attempt_sync"),
    (r"\bAsyncMiddleware\b", "Middleware"),
    (r"\bAsyncNext\b", "Next"),
    (r"\basync def\b", "def"),
    (r"\bawait ", ""),
]


def generate(module: str) -> str:
    source = PACKAGE / f"{module}_async.py"
    text = source.read_text(encoding="utf-8")
    docstring_end = text.index('"""', 3) + 3
    header = HEADER.format(what=MODULES[module], source=source.name)
    text = header + "\n" + text[docstring_end:].lstrip("\n")
    for pattern, replacement in REPLACEMENTS:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return _format(text, PACKAGE / f"{module}_sync.py")


def _format(text: str, target: Path) -> str:
    """The text with its imports sorted and formatted, as ruff writes it.

    Renamed imports may sort differently, and lines that got shorter may be joined.
    """
    found = Path(sys.executable).parent / "ruff"
    ruff = str(found) if found.exists() else "ruff"
    for command in (["check", "--select", "I", "--fix-only", "--quiet"], ["format"]):
        text = subprocess.run(
            [ruff, *command, "--stdin-filename", str(target), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return text


def main(argv: list[str]) -> int:
    stale = 0
    for module in MODULES:
        target = PACKAGE / f"{module}_sync.py"
        expected = generate(module)
        if "--check" not in argv:
            target.write_text(expected, encoding="utf-8")
        elif not target.exists() or target.read_text(encoding="utf-8") != expected:
            print(f"{target.name} is out of date: run `make generate`", file=sys.stderr)
            stale = 1
    return stale


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
