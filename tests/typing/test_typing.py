"""The typed API as a user sees it: mypy --strict accepts tests/typing/api.py and
tests/typing/async_api.py, and rejects tests/typing/bad_handler.py and
tests/typing/bad_async_handler.py with exactly the errors marked in them.

A line that mypy must reject ends with ``# E: <error code>``.
"""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TYPING = ROOT / "tests" / "typing"
MARKER = re.compile(r"#\s*E:\s*(?P<codes>[a-z-]+(?:\s*,\s*[a-z-]+)*)\s*$")
ERROR = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*?)\s+\[(?P<code>[a-z-]+)\]$"
)


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the session: the second run reuses what the first one checked."""
    return tmp_path_factory.mktemp("mypy_cache")


def run_mypy(path: Path, cache: Path) -> tuple[int, list[str]]:
    """Run ``mypy --strict`` with the project's settings; its exit status and output lines."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(cache),
            "--show-error-codes",
            "--no-pretty",
            "--no-color-output",
            "--no-error-summary",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return completed.returncode, (completed.stdout + completed.stderr).splitlines()


def expected_errors(path: Path) -> set[tuple[int, str]]:
    """The (line, code) pairs marked ``# E: code`` in a file."""
    expected = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = MARKER.search(line)
        if match:
            expected.update((number, code.strip()) for code in match["codes"].split(","))
    return expected


def test_mypy_accepts_the_api_snippet(mypy_cache: Path) -> None:
    status, output = run_mypy(TYPING / "api.py", mypy_cache)

    assert (status, output) == (0, [])


def test_mypy_rejects_a_handler_that_returns_other_than_its_command_declares(
    mypy_cache: Path,
) -> None:
    path = TYPING / "bad_handler.py"
    assert [code for _, code in expected_errors(path)] == ["arg-type"]

    status, output = run_mypy(path, mypy_cache)

    errors = [ERROR.match(line) for line in output]
    assert all(errors), output  # every line is an error in the checked file
    actual = {(int(e["line"]), e["code"]) for e in errors if e}
    assert (1, expected_errors(path)) == (status, actual), output
    assert all(Path(e["path"]).name == "bad_handler.py" for e in errors if e)
    assert '"Callable[[Allocate], int]"' in output[0]
    assert 'expected "Callable[[Allocate], str]"' in output[0]


def test_the_api_snippet_runs(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = runpy.run_path(str(TYPING / "api.py"))

    allocations = namespace["allocations"]
    # Allocated by o1, o2 and o5 through the bus, and o3 given to the bus directly.
    assert [batchref for batchref, _ in allocations] == ["b1"] * 4
    assert [causation is None for _, causation in allocations] == [False, False, True, False]
    assert namespace["batches"].get("b1").qty == 100 - 10 - 1 - 1


# -- the async bus (DESIGN.md §9: every promise above, async) ---------------------------


def test_mypy_accepts_the_async_api_snippet(mypy_cache: Path) -> None:
    status, output = run_mypy(TYPING / "async_api.py", mypy_cache)

    assert (0, []) == (status, output)


def test_the_async_api_snippet_runs() -> None:
    namespace = runpy.run_path(str(TYPING / "async_api.py"))

    allocations = namespace["allocations"]
    # Allocated by o1, o2 and o5 through the bus, and o3 given to the bus directly.
    assert ["b1"] * 4 == [batchref for batchref, _ in allocations]
    assert [False, False, True, False] == [causation is None for _, causation in allocations]
    assert 100 - 10 - 1 - 1 == namespace["batches"].get("b1").qty


@pytest.fixture(scope="module")
def bad_async_handler(mypy_cache: Path) -> tuple[Path, int, list[str]]:
    """mypy's verdict on tests/typing/bad_async_handler.py: the path, status and output."""
    path = TYPING / "bad_async_handler.py"
    return (path, *run_mypy(path, mypy_cache))


def errors_of(output: list[str]) -> dict[tuple[int, str], str]:
    """mypy's errors as {(line, code): message}; every output line must be one."""
    errors = [ERROR.match(line) for line in output]
    assert all(errors), output
    return {(int(e["line"]), e["code"]): e["message"] for e in errors if e}


def test_mypy_rejects_an_async_handler_that_returns_other_than_its_command_declares(
    bad_async_handler: tuple[Path, int, list[str]],
) -> None:
    path, status, output = bad_async_handler
    [marked] = expected_errors(path)
    assert "arg-type" == marked[1]

    errors = errors_of(output)

    assert 1 == status
    assert marked in errors, output
    assert '"Callable[[Allocate], Coroutine[Any, Any, int]]"' in errors[marked]


def test_mypy_accepts_an_async_handler_that_returns_what_its_command_declares(
    bad_async_handler: tuple[Path, int, list[str]],
) -> None:
    path, _, output = bad_async_handler

    assert expected_errors(path) == set(errors_of(output)), output
