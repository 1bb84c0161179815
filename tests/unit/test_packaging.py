"""The distribution: a name of its own on PyPI, the import name messagebus, and extras
that install only what they are for."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

import messagebus

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "service-messagebus"


def requirements(extra: str) -> set[str]:
    """The names of what an extra adds to the distribution's own requirements."""
    found = set()
    for requirement in importlib.metadata.requires(DISTRIBUTION) or []:
        if f'extra == "{extra}"' in requirement or f"extra == '{extra}'" in requirement:
            found.add(re.split(r"[\[<>=;~! ]", requirement, maxsplit=1)[0].lower())
    return found


def test_the_distribution_has_a_name_of_its_own_and_installs_the_messagebus_command() -> None:
    metadata = importlib.metadata.metadata(DISTRIBUTION)

    assert DISTRIBUTION == metadata["Name"]
    assert messagebus.__version__ == metadata["Version"]
    [script] = [
        entry
        for entry in importlib.metadata.distribution(DISTRIBUTION).entry_points
        if entry.group == "console_scripts"
    ]
    assert ("messagebus", "messagebus.cli:main") == (script.name, script.value)


def test_the_sqlalchemy_extra_installs_no_postgresql_driver() -> None:
    assert {"sqlalchemy", "aiosqlite"} == requirements("sqlalchemy")
    assert {"sqlalchemy", "aiosqlite", "psycopg"} == requirements("postgresql")


INSTALL = re.compile(r"pip install\b[^\n`]*")


@pytest.mark.parametrize(
    "path",
    sorted(
        path.relative_to(ROOT).as_posix()
        for pattern in ("README.md", "docs/**/*.md", "src/**/*.py")
        for path in ROOT.glob(pattern)
    ),
)
def test_every_install_line_installs_this_distribution(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    wrong = [
        line
        for line in INSTALL.findall(text)
        if re.search(r"""(?<![\w-])messagebus\b""", line.removeprefix("pip install"))
        and DISTRIBUTION not in line
    ]
    assert [] == wrong
