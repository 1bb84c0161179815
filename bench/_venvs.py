"""The peers' virtual environments, under ``bench/.venvs/`` (git-ignored), made when missing.

Each peer is installed from PyPI into an environment of its own: the PyPI
package called ``messagebus`` would shadow this project's import name, and
the others must not see each other's dependencies. The environments of the
peers that run S4 also get this project's runtime dependencies (not the
project: its source tree is put on the path), to borrow its fake unit of work.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / "bench" / ".venvs"
STAMP = ".bench-requirements"


@dataclass(frozen=True)
class PeerEnvironment:
    name: str
    #: Pinned, so that results stay comparable from run to run; raise on purpose.
    requirement: str
    #: Also install this project's runtime dependencies (for S4's fake unit of work).
    with_project_dependencies: bool


PEER_ENVIRONMENTS = {
    env.name: env
    for env in (
        PeerEnvironment("pymessagebus", "pymessagebus==1.2.3", True),
        PeerEnvironment("lato", "lato==0.13.0", True),
        PeerEnvironment("python-cqrs", "python-cqrs==5.3.0", True),
        PeerEnvironment("messagebus-pypi", "messagebus==0.16.1", False),
    )
}


class EnvironmentUnavailable(Exception):
    """A peer's environment could not be made; the message says why."""


def project_dependencies() -> list[str]:
    """The ``[project] dependencies`` of pyproject.toml (markers kept, for pip)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python 3.10: read the one list this needs
        block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.MULTILINE | re.DOTALL)
        return re.findall(r"\"([^\"]+)\"", block.group(1)) if block else []
    return list(tomllib.loads(text)["project"]["dependencies"])


def requirements(env: PeerEnvironment) -> list[str]:
    extra = project_dependencies() if env.with_project_dependencies else []
    return [env.requirement, *extra]


def python_of(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def ensure(name: str, log: Callable[[str], None]) -> Path:
    """The interpreter of a peer's environment, made (or remade) if needed."""
    env = PEER_ENVIRONMENTS[name]
    folder = VENVS / name
    wanted = "\n".join(requirements(env)) + "\n"
    stamp = folder / STAMP
    python = python_of(name)
    if python.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return python
    log(f"making {folder.relative_to(ROOT)}: {', '.join(requirements(env))}")
    if folder.exists():
        shutil.rmtree(folder)
    _run([sys.executable, "-m", "venv", str(folder)], f"python -m venv {folder}")
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements(env),
        ],
        f"pip install {env.requirement}",
    )
    stamp.write_text(wanted, encoding="utf-8")
    return python


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
        raise EnvironmentUnavailable(f"{what} failed: {' '.join(errors) or done.returncode}")
