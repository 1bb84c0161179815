"""This project's source tree, for peers that borrow its fake unit of work (S4)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench._api import NotApplicable

SRC = Path(__file__).resolve().parents[2] / "src"


def fake_unit_of_work(asynchronous: bool = False) -> tuple[Any, Any]:
    """``messagebus.testing``'s FakeUnitOfWork (or FakeAsyncUnitOfWork) and InMemoryRepository.

    The peer's environment has this project's dependencies (attrs, cattrs,
    tenacity, structlog) but not the project: its source is put on the path.
    """
    if str(SRC) not in sys.path:
        sys.path.append(str(SRC))
    try:
        from messagebus import testing
    except ImportError as exc:
        raise NotApplicable(f"messagebus.testing cannot be imported here: {exc}") from None
    fake = testing.FakeAsyncUnitOfWork if asynchronous else testing.FakeUnitOfWork
    return fake, testing.InMemoryRepository
