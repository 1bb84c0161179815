"""DESIGN.md §5, Retries: tenacity policies, what is transient, and waits that tests inject.

Every test of a bus runs against both (the ``h`` fixture); the tests of
``is_transient`` and ``retry_if_transient`` on their own involve no bus.
"""

import time
import typing

import attrs
import pytest
import tenacity
from structlog.typing import EventDict

from messagebus import (
    Command,
    ConcurrencyError,
    Context,
    Event,
    RetryPolicy,
    Transient,
    is_transient,
    retry_if_transient,
)
from messagebus.observe import InMemoryDeadLetters
from messagebus.testing import FakeClock

from ._buses import Harness
from ._loggers import filtered_at_warning, quiet_logger


@attrs.frozen
class Allocate(Command[str]):
    sku: str


@attrs.frozen
class Allocated(Event):
    sku: str


@attrs.frozen
class Followed(Event):
    n: int


class OperationalError(Exception):
    """Named like PEP 249's (and SQLAlchemy's) OperationalError, from no driver."""


class StaleDataError(Exception):
    """Named like SQLAlchemy's error for a failed optimistic version check."""


class SerializationFailure(Exception):
    """Shaped like psycopg 3's: the SQLSTATE in ``sqlstate``."""

    sqlstate = "40001"


class DeadlockDetected(Exception):
    """Shaped like psycopg2's: the SQLSTATE in ``pgcode``."""

    pgcode = "40P01"


class UniqueViolation(Exception):
    sqlstate = "23505"


class DBAPIError(Exception):
    """Shaped like SQLAlchemy's: the driver's error in ``orig``."""

    def __init__(self, orig: BaseException, *, connection_invalidated: bool = False) -> None:
        super().__init__(f"({type(orig).__name__}) {orig}")
        self.orig = orig
        self.connection_invalidated = connection_invalidated


class StockServiceBusy(Transient):
    """An application's own retryable error."""


def caused_by(cause: BaseException) -> RuntimeError:
    """A domain-looking error raised ``from`` another one."""
    try:
        raise cause
    except BaseException as exc:
        try:
            raise RuntimeError("repository failed") from exc
        except RuntimeError as wrapped:
            return wrapped


def raised_while_handling(cause: BaseException) -> ValueError:
    """A domain error raised in an ``except`` block: linked by ``__context__`` only."""
    try:
        raise cause
    except BaseException:
        try:
            raise ValueError("no such batch")  # in an except block: the point
        except ValueError as error:
            return error


TRANSIENT: dict[str, typing.Callable[[], BaseException]] = {
    "TimeoutError": lambda: TimeoutError("query timed out"),
    "ConnectionError": lambda: ConnectionResetError("connection reset by peer"),
    "OperationalError": lambda: OperationalError("server closed the connection"),
    "StaleDataError": lambda: StaleDataError("expected to update 1 row, updated 0"),
    "Transient subclass": lambda: StockServiceBusy("stock service busy"),
    "ConcurrencyError": lambda: ConcurrencyError("aggregate 'lamp'"),
    "sqlstate 40001 as orig": lambda: DBAPIError(SerializationFailure("could not serialize")),
    "sqlstate 40001 as __cause__": lambda: caused_by(SerializationFailure("could not serialize")),
    "pgcode 40P01": lambda: DeadlockDetected("deadlock detected"),
    "pgcode 40P01 as orig": lambda: DBAPIError(DeadlockDetected("deadlock detected")),
    "connection invalidated": lambda: DBAPIError(
        Exception("server gone"), connection_invalidated=True
    ),
    "TimeoutError two levels down": lambda: caused_by(DBAPIError(TimeoutError())),
}

NOT_TRANSIENT: dict[str, typing.Callable[[], BaseException]] = {
    "ValueError": lambda: ValueError("out of stock"),
    "KeyError": lambda: KeyError("lamp"),
    "other sqlstate": lambda: DBAPIError(UniqueViolation("duplicate key")),
    "connection not invalidated": lambda: DBAPIError(Exception("syntax error")),
    "raised while handling a TimeoutError": lambda: raised_while_handling(TimeoutError()),
}


def failing_handler(
    h: Harness,
    errors: typing.Callable[[], BaseException],
    *,
    failures: int = 1000,
    retry: RetryPolicy | None = None,
) -> list[int]:
    """Register a handler of Allocate that fails ``failures`` times; returns its attempts."""
    attempts: list[int] = []

    @h.register(retry=retry, uow=False)
    def allocate(cmd: Allocate) -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) <= failures:
            raise errors()
        return "done"

    return attempts


@pytest.fixture
def no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(seconds: float) -> None:
        raise AssertionError(f"time.sleep({seconds}) was called")

    monkeypatch.setattr(time, "sleep", refuse)


# -- the default policy -------------------------------------------------------------


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_default_policy_retries_a_transient_failure_and_gives_up_after_three_attempts(
    h: Harness, error: typing.Callable[[], BaseException], logs: list[EventDict]
) -> None:
    attempts = failing_handler(h, error)
    h.build(uow=None)

    with pytest.raises(Exception) as caught:  # noqa: PT011 - checked just below
        h.handle(Allocate("lamp"))

    assert type(error()) is type(caught.value)
    assert ([1, 2, 3], 2) == (attempts, len(h.waits))


@pytest.mark.parametrize("error", NOT_TRANSIENT.values(), ids=NOT_TRANSIENT.keys())
def test_default_policy_gives_a_domain_error_exactly_one_attempt(
    h: Harness, error: typing.Callable[[], BaseException], logs: list[EventDict]
) -> None:
    attempts = failing_handler(h, error)
    h.build(uow=None)

    with pytest.raises(Exception) as caught:  # noqa: PT011 - checked just below
        h.handle(Allocate("lamp"))

    assert type(error()) is type(caught.value)
    assert ([1], []) == (attempts, h.waits)


def test_transient_failure_that_clears_up_is_retried_until_it_succeeds(
    h: Harness, logger: object
) -> None:
    attempts = failing_handler(h, TRANSIENT["TimeoutError"], failures=2)
    h.build(logger=logger, uow=None)

    result = h.handle(Allocate("lamp"))

    assert ("done", [1, 2, 3]) == (result, attempts)


def test_default_policy_waits_about_50_ms_then_about_100_ms(h: Harness) -> None:
    failing_handler(h, TRANSIENT["TimeoutError"], failures=2)
    h.build(uow=None)

    h.handle(Allocate("lamp"))

    first, second = h.waits
    assert 0.05 <= first <= 0.1
    assert 0.1 <= second <= 0.15


def test_event_handler_is_retried_like_a_command_handler(h: Harness, logs: list[EventDict]) -> None:
    attempts: list[int] = []

    @h.register
    def record(event: Allocated) -> None:
        attempts.append(len(attempts) + 1)
        raise TimeoutError("query timed out")

    h.build(uow=None)
    h.handle(Allocated("lamp"))

    assert [1, 2, 3] == attempts
    assert [("message_failed", 3)] == [
        (entry["event"], entry["attempt"]) for entry in logs if entry["outcome"] == "failed"
    ]


# -- policies ---------------------------------------------------------------------


def test_handlers_own_policy_overrides_the_bus_default(h: Harness, logger: object) -> None:
    attempts = failing_handler(
        h,
        TRANSIENT["TimeoutError"],
        failures=4,
        retry=RetryPolicy(stop=tenacity.stop_after_attempt(5)),
    )
    h.build(logger=logger, uow=None, retry=RetryPolicy.no_retries())

    result = h.handle(Allocate("lamp"))

    assert ("done", [1, 2, 3, 4, 5]) == (result, attempts)


def test_bus_default_policy_applies_to_handlers_without_their_own(
    h: Harness, logs: list[EventDict]
) -> None:
    attempts = failing_handler(h, TRANSIENT["TimeoutError"])
    h.build(uow=None, retry=RetryPolicy(stop=tenacity.stop_after_attempt(4)))

    with pytest.raises(TimeoutError):
        h.handle(Allocate("lamp"))

    assert [1, 2, 3, 4] == attempts


def test_no_retries_policy_makes_one_attempt_even_for_a_transient_failure(
    h: Harness, logs: list[EventDict]
) -> None:
    attempts = failing_handler(h, TRANSIENT["TimeoutError"], retry=RetryPolicy.no_retries())
    h.build(uow=None)

    with pytest.raises(TimeoutError):
        h.handle(Allocate("lamp"))

    assert ([1], []) == (attempts, h.waits)


def test_any_tenacity_retry_strategy_decides_what_is_retried(
    h: Harness, logs: list[EventDict]
) -> None:
    policy = RetryPolicy(retry=tenacity.retry_if_exception_type(KeyError))
    keys = h
    key_attempts = failing_handler(keys, lambda: KeyError("lamp"), failures=2)
    timeouts = Harness(h.kind)
    timeout_attempts = failing_handler(timeouts, TRANSIENT["TimeoutError"])
    keys.build(uow=None, retry=policy)
    timeouts.build(uow=None, retry=policy)

    keys.handle(Allocate("lamp"))
    with pytest.raises(TimeoutError):
        timeouts.handle(Allocate("lamp"))

    assert ([1, 2, 3], [1]) == (key_attempts, timeout_attempts)


def test_any_tenacity_wait_strategy_gives_the_waits(h: Harness, logger: object) -> None:
    failing_handler(
        h,
        TRANSIENT["TimeoutError"],
        failures=2,
        retry=RetryPolicy(wait=tenacity.wait_fixed(0.25)),
    )
    h.build(logger=logger, uow=None)

    h.handle(Allocate("lamp"))

    assert [0.25, 0.25] == h.waits


def test_any_tenacity_stop_strategy_decides_when_to_give_up(
    h: Harness, monkeypatch: pytest.MonkeyPatch, logs: list[EventDict]
) -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:  # lets the fake clock run, instantly
        h.waits.append(seconds)
        clock.advance(seconds)

    attempts = failing_handler(
        h,
        TRANSIENT["TimeoutError"],
        retry=RetryPolicy(
            stop=tenacity.stop_after_attempt(10) | tenacity.stop_after_delay(1.0),
            wait=tenacity.wait_fixed(0.3),
        ),
    )
    h.build(uow=None, sleep=sleep, clock=clock)

    with pytest.raises(TimeoutError):
        h.handle(Allocate("lamp"))

    # The fifth attempt fails 1.2 s after the first: over the 1 s budget.
    assert ([1, 2, 3, 4, 5], [0.3] * 4) == (attempts, h.waits)


@pytest.mark.parametrize(
    "logger",
    [pytest.param(None, id="successes-logged"), pytest.param(filtered_at_warning(), id="quiet")],
)
def test_stop_after_delay_counts_the_time_of_the_first_attempt(
    h: Harness,
    logger: typing.Any,
    monkeypatch: pytest.MonkeyPatch,
    logs: list[EventDict],
) -> None:
    clock = FakeClock()
    attempts: list[int] = []

    @h.register(retry=RetryPolicy(stop=tenacity.stop_after_delay(5)), uow=False)
    def allocate(cmd: Allocate) -> str:
        attempts.append(len(attempts) + 1)
        clock.advance(10.0)  # each attempt takes 10 s: the first is already over the budget
        raise TimeoutError("query timed out")

    h.build(uow=None, logger=logger, clock=clock)
    with pytest.raises(TimeoutError):
        h.handle(Allocate("lamp"))

    assert [1] == attempts  # what tenacity.Retrying itself does with the same policy


def test_a_policy_that_sets_only_when_to_stop_still_retries_only_transient_failures(
    h: Harness,
) -> None:
    calls: list[str] = []

    @h.register(retry=RetryPolicy(stop=tenacity.stop_after_attempt(4)))
    def allocate(cmd: Allocate, uow: typing.Any) -> str:
        calls.append(cmd.sku)
        raise (KeyError if cmd.sku == "domain" else ConnectionError)(cmd.sku)

    with pytest.raises(KeyError):
        h.handle(Allocate("domain"))
    with pytest.raises(ConnectionError):
        h.handle(Allocate("transient"))

    assert ["domain"] + ["transient"] * 4 == calls


def test_with_successes_not_logged_a_command_is_retried_and_a_failed_event_dead_lettered(
    h: Harness,
) -> None:
    # Handlers that ask for nothing but their message, and no unit of work.
    store = InMemoryDeadLetters()
    calls: list[str] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        calls.append("allocate")
        if calls.count("allocate") == 1:
            raise TimeoutError("busy")
        return "ok"

    @h.register(uow=False)
    def broken(event: Allocated) -> None:
        calls.append("broken")
        raise ValueError("bug")

    @h.register(uow=False)
    def flaky(event: Allocated) -> None:
        calls.append("flaky")
        if calls.count("flaky") == 1:
            raise ConnectionError("reset")

    h.build(dead_letters=store, logger=quiet_logger(), uow=None)

    assert "ok" == h.handle(Allocate("lamp"))
    h.handle(Allocated("lamp"))

    assert ["allocate", "allocate", "broken", "flaky", "flaky"] == calls
    assert [("Allocated", 1)] == [(d.message_name, d.attempts) for d in store.letters]
    assert 2 == len(h.waits)


def test_with_successes_not_logged_commands_and_events_raising_events_are_retried(
    h: Harness,
) -> None:
    calls: list[str] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        calls.append("allocate")
        if calls.count("allocate") == 1:
            raise TimeoutError("busy")
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register(uow=False)
    def on_allocated(event: Allocated, context: Context) -> None:
        calls.append("on_allocated")
        if calls.count("on_allocated") == 1:
            raise ConnectionError("reset")
        context.emit(Followed(1))

    @h.register(uow=False)
    def on_followed(event: Followed, context: Context) -> None:
        calls.append("on_followed")

    h.build(logger=quiet_logger(), uow=None)

    assert "ok" == h.handle(Allocate("lamp"))
    assert ["allocate", "allocate", "on_allocated", "on_allocated", "on_followed"] == calls
    assert 2 == len(h.waits)


# -- waiting without sleeping --------------------------------------------------------


@pytest.mark.usefixtures("no_real_sleep")
def test_retries_wait_through_the_injected_sleep_and_never_through_time_sleep(
    h: Harness,
    logger: object,
) -> None:
    failing_handler(
        h,
        TRANSIENT["TimeoutError"],
        failures=2,
        retry=RetryPolicy(wait=tenacity.wait_fixed(2)),
    )
    slept: list[float] = []
    h.build(logger=logger, uow=None, sleep=slept.append)

    result = h.handle(Allocate("lamp"))

    assert ("done", [2.0, 2.0]) == (result, slept)


# -- logs of attempts -----------------------------------------------------------------


def test_each_attempt_is_logged_a_retried_one_as_retrying(
    h: Harness, logs: list[EventDict]
) -> None:
    failing_handler(h, TRANSIENT["TimeoutError"], retry=RetryPolicy(wait=tenacity.wait_fixed(0.25)))
    h.build(uow=None)

    with pytest.raises(TimeoutError):
        h.handle(Allocate("lamp"))

    assert [
        ("message_attempt_failed", "warning", "retrying", 1, 0.25),
        ("message_attempt_failed", "warning", "retrying", 2, 0.25),
        ("message_failed", "error", "failed", 3, None),
    ] == [
        (e["event"], e["log_level"], e["outcome"], e["attempt"], e.get("retry_in_s")) for e in logs
    ]
    assert {"TimeoutError: query timed out"} == {entry["error"] for entry in logs}


def test_attempt_that_succeeds_after_a_retry_is_logged_with_its_number(
    h: Harness, logs: list[EventDict]
) -> None:
    failing_handler(h, TRANSIENT["TimeoutError"], failures=1)
    h.build(uow=None)

    h.handle(Allocate("lamp"))

    assert [
        ("message_attempt_failed", "retrying", 1),
        ("message_handled", "succeeded", 2),
    ] == [(entry["event"], entry["outcome"], entry["attempt"]) for entry in logs]
    assert 1 == len({entry["message_id"] for entry in logs})


# -- the cost of retries on the success path ------------------------------------------


def test_success_path_creates_no_tenacity_objects(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[object] = []
    retrying_init = tenacity.Retrying.__init__

    def counting_init(self: tenacity.Retrying, *args: typing.Any, **kwargs: typing.Any) -> None:
        made.append(self)
        retrying_init(self, *args, **kwargs)

    monkeypatch.setattr(tenacity.Retrying, "__init__", counting_init)
    attempts: list[int] = []

    @h.register
    def allocate(cmd: Allocate, uow: typing.Any, context: Context) -> str:
        attempts.append(len(attempts) + 1)
        if cmd.sku == "flaky" and len(attempts) == 1:
            raise TimeoutError("query timed out")
        context.emit(Allocated(cmd.sku))
        return "done"

    @h.register(uow=False)
    def record(event: Allocated) -> None:
        return None

    h.build(uow=h.uow)
    h.handle(Allocate("lamp"))
    h.handle(Allocated("chair"))

    assert 0 == len(made)
    attempts.clear()
    h.handle(Allocate("flaky"))  # the counter does count, once there is a retry
    assert 1 == len(made)


# -- is_transient and retry_if_transient --------------------------------------------


@pytest.mark.one_bus("is_transient on its own")
@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_is_transient_accepts_failures_worth_retrying(
    error: typing.Callable[[], BaseException],
) -> None:
    assert True is is_transient(error())


@pytest.mark.one_bus("is_transient on its own")
@pytest.mark.parametrize("error", NOT_TRANSIENT.values(), ids=NOT_TRANSIENT.keys())
def test_is_transient_refuses_domain_errors(error: typing.Callable[[], BaseException]) -> None:
    assert False is is_transient(error())


@pytest.mark.one_bus("is_transient on its own")
def test_is_transient_terminates_on_a_cycle_of_causes() -> None:
    first, second = ValueError("first"), ValueError("second")
    first.__cause__, second.__cause__ = second, first

    assert False is is_transient(first)


@pytest.mark.one_bus("is_transient on its own")
def test_is_transient_terminates_on_a_cycle_of_wrapped_errors() -> None:
    first = DBAPIError(ValueError("placeholder"))
    second = DBAPIError(first)
    first.orig = second

    assert False is is_transient(first)


@pytest.mark.one_bus("is_transient on its own")
def test_is_transient_finds_a_transient_error_behind_a_cycle() -> None:
    first, second = ValueError("first"), ValueError("second")
    first.__cause__, second.__cause__ = second, first
    second.orig = TimeoutError()  # type: ignore[attr-defined]

    assert True is is_transient(first)


def test_retry_if_transient_retries_further_types_it_is_given(h: Harness) -> None:
    attempts = failing_handler(
        h,
        lambda: KeyError("lamp"),
        failures=2,
        retry=RetryPolicy(retry=retry_if_transient(also=(KeyError,))),
    )
    h.build(uow=None)

    h.handle(Allocate("lamp"))

    assert [1, 2, 3] == attempts


@pytest.mark.one_bus("retry_if_transient on its own, in tenacity")
def test_retry_if_transient_works_as_a_plain_tenacity_strategy() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise TimeoutError("query timed out")
        return "done"

    retrying = tenacity.Retrying(
        retry=retry_if_transient(), stop=tenacity.stop_after_attempt(5), sleep=lambda _: None
    )

    assert ("done", [1, 2, 3]) == (retrying(flaky), attempts)
