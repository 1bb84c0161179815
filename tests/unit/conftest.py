"""Fixtures shared by the unit tests: the logs of a test, and the waits between retries."""

from collections.abc import Iterator

import pytest
import structlog
from structlog.typing import EventDict


@pytest.fixture
def logs() -> Iterator[list[EventDict]]:
    """The structlog events written during the test, as dicts.

    A bus built in the test body is built inside the capture, so it logs here.
    """
    with structlog.testing.capture_logs() as entries:
        yield entries


@pytest.fixture
def waits() -> list[float]:
    """The waits between retries, recorded instead of slept: ``sleep=waits.append``."""
    return []
