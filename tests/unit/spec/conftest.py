"""The specification runs on both buses: the ``h`` fixture gives each test one harness per kind."""

import pytest

from ._buses import KINDS, Harness
from ._loggers import quiet_logger


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest) -> Harness:
    """A harness of each kind of bus: the test runs against both."""
    return Harness(request.param)


SUCCESSES = {"successes logged": None, "successes not logged": quiet_logger}


@pytest.fixture(params=SUCCESSES.keys())
def logger(request: pytest.FixtureRequest) -> object:
    """The bus's logger in two set-ups: the default, and one where INFO is filtered out.

    A promise tested with this fixture holds whether or not successes are logged.
    """
    make = SUCCESSES[request.param]
    return None if make is None else make()
