"""Importing does no work: `import messagebus` loads no database driver or broker client."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Top-level packages that only the optional adapters may import.
HEAVY = [
    "aio_pika",
    "aiokafka",
    "kafka",
    "opentelemetry",
    "pika",
    "psycopg",
    "psycopg2",
    "redis",
    "sqlalchemy",
]

SCRIPT = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
heavy = set(json.loads(sys.argv[2]))
print(json.dumps(sorted(name for name in sys.modules if name.partition(".")[0] in heavy)))
"""


def _heavy_modules_after_importing(module: str) -> list[str]:
    # A fresh interpreter: this test process has imported much more already.
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, module, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize("module", ["messagebus", "messagebus.testing"])
def test_importing_loads_no_database_driver_or_broker_client(module: str) -> None:
    assert [] == _heavy_modules_after_importing(module)


def test_a_heavy_import_would_be_seen() -> None:
    # The subprocess check itself works: importing an adapter's dependency is seen.
    assert "sqlalchemy" in _heavy_modules_after_importing("sqlalchemy")
