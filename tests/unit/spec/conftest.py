"""The specification runs on both buses: the ``h`` fixture gives each test one harness per kind.

A test that cannot (threads, tasks, a registry or ``is_transient`` on its own,
what only the async bus does) says why with ``@pytest.mark.one_bus(reason)``;
any other test that does not run on both fails.
"""

import pytest

from ._buses import KINDS, Harness
from ._loggers import quiet_logger


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest) -> Harness:
    """A harness of each kind of bus: the test runs against both."""
    return Harness(request.param)


@pytest.fixture(autouse=True)
def _runs_on_both_buses_or_says_why(request: pytest.FixtureRequest) -> None:
    if "h" not in request.fixturenames and request.node.get_closest_marker("one_bus") is None:
        pytest.fail(
            f"{request.node.name} runs on neither bus through the h fixture nor says why "
            "with @pytest.mark.one_bus(reason)",
            pytrace=False,
        )


SUCCESSES = {"successes logged": None, "successes not logged": quiet_logger}


@pytest.fixture(params=SUCCESSES.keys())
def logger(request: pytest.FixtureRequest) -> object:
    """The bus's logger in two set-ups: the default, and one where INFO is filtered out.

    A promise tested with this fixture holds whether or not successes are logged.
    """
    make = SUCCESSES[request.param]
    return None if make is None else make()
