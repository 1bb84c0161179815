"""DESIGN.md §13: what an application gets when it configures nothing, and the level gate.

The first tests run a fresh interpreter: structlog and the standard library's
logging exactly as an application that configured neither leaves them.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
import tenacity
from structlog.typing import EventDict

from messagebus import (
    Command,
    ConfigurationError,
    Context,
    Event,
    Expected,
    MessageBus,
    Registry,
    RetryPolicy,
)
from messagebus.observe import InMemoryDeadLetters

from ._buses import Harness

APP = """
import attrs
from messagebus import Command, Context, Event, MessageBus, Registry

@attrs.frozen
class Allocate(Command[str]):
    sku: str

@attrs.frozen
class Allocated(Event):
    sku: str

registry = Registry()

@registry.register(uow=False)
def allocate(cmd: Allocate, context: Context) -> str:
    context.emit(Allocated(cmd.sku))
    return "ok"

@registry.register(uow=False)
def notify(event: Allocated) -> None:
    if event.sku == "broken":
        raise ValueError("the mail server refused " + event.sku)

bus = MessageBus(registry, sleep=lambda seconds: None)
"""


def run_app(body: str, folder: Path) -> subprocess.CompletedProcess[str]:
    app = folder / "app.py"
    app.write_text(APP + textwrap.dedent(body), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(app)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.one_bus("a fresh interpreter, as an application runs")
def test_an_application_that_configures_no_logging_sees_nothing_for_successes(
    tmp_path: Path,
) -> None:
    done = run_app(
        """
        for n in range(20):
            assert "ok" == bus.handle(Allocate(f"lamp-{n}"))
        bus.handle(Allocated("lamp"))
        """,
        tmp_path,
    )

    assert (0, "", "") == (done.returncode, done.stdout, done.stderr)


@pytest.mark.one_bus("a fresh interpreter, as an application runs")
def test_a_failure_is_one_concise_record_on_stderr_with_the_applications_frames_only(
    tmp_path: Path,
) -> None:
    done = run_app(
        """
        assert "ok" == bus.handle(Allocate("broken"))
        """,
        tmp_path,
    )

    assert (0, "") == (done.returncode, done.stdout)
    first, *traceback = done.stderr.splitlines()
    assert first.startswith("messagebus: message_failed: __main__.notify on Allocated (")
    assert first.endswith("): ValueError: the mail server refused broken")
    assert "attempt=1" in first
    assert "Traceback (most recent call last):" == traceback[0]
    assert "ValueError: the mail server refused broken" == traceback[-1]
    assert "messagebus" not in "\n".join(traceback[1:-1])  # the library's frames are left out
    assert any('raise ValueError("the mail server refused "' in line for line in traceback)


@pytest.mark.one_bus("a fresh interpreter, as an application runs")
def test_with_the_standard_librarys_logging_at_info_successes_are_one_line_each(
    tmp_path: Path,
) -> None:
    done = run_app(
        """
        import logging
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        bus = MessageBus(registry)
        bus.handle(Allocate("lamp"))
        """,
        tmp_path,
    )

    lines = done.stderr.splitlines()
    assert 2 == len(lines), done.stderr
    assert lines[0].startswith("INFO messagebus: message_handled: __main__.allocate on Allocate (")
    assert lines[1].startswith("INFO messagebus: message_handled: __main__.notify on Allocated (")


class CountingLogger:
    """A standard-library-like logger that counts how often its level is asked for."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.asked = 0
        self.lines: list[str] = []

    def isEnabledFor(self, level: int) -> bool:
        self.asked += 1
        return level >= self.level

    def bind(self, **fields: Any) -> CountingLogger:
        return self

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(event)

    warning = error = info


@attrs.frozen
class Allocate(Command[str]):
    sku: str


@attrs.frozen
class Allocated(Event):
    sku: str


@pytest.mark.one_bus("counts the calls of one logger; the gate is shared code")
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_the_level_is_asked_once_per_handle_whatever_the_events_that_follow(level: int) -> None:
    registry = Registry()

    @registry.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        for n in range(3):
            context.emit(Allocated(f"{cmd.sku}-{n}"))
        return "ok"

    @registry.register(uow=False)
    def notify(event: Allocated) -> None:
        pass

    @registry.register(uow=False)
    def audit(event: Allocated) -> None:
        pass

    logger = CountingLogger(level)
    bus = MessageBus(registry, logger=logger)
    for _ in range(5):
        bus.handle(Allocate("lamp"))

    assert 5 == logger.asked
    assert (35 if level == logging.INFO else 0) == len(logger.lines)


@pytest.mark.one_bus("what only the sync bus refuses")
def test_a_handler_that_is_a_coroutine_function_is_refused_by_the_sync_bus() -> None:
    registry = Registry()

    @registry.register(uow=False)
    async def allocate(cmd: Allocate) -> str:
        return "never awaited"

    class AsyncCallable:
        async def __call__(self, event: Allocated) -> None:
            pass

    registry.register(AsyncCallable(), message=Allocated, uow=False)

    with pytest.raises(ConfigurationError, match=r"allocate is asynchronous \(async def\)"):
        MessageBus(registry)


# -- expected outcomes (DESIGN §13) --------------------------------------------------


class InvalidSku(Expected):
    pass


class OutOfStock(Exception):
    """An error the application does not own: marked with ``expected=``."""


@pytest.mark.parametrize("error", [InvalidSku("no such sku: lamp"), OutOfStock("no lamps")])
def test_an_expected_outcome_reaches_the_caller_once_logged_below_error_without_traceback(
    h: Harness, logs: list[EventDict], error: Exception
) -> None:
    attempts: list[int] = []
    letters = InMemoryDeadLetters()

    @h.register(uow=False, retry=RetryPolicy(retry=tenacity.retry_always))
    def allocate(cmd: Allocate) -> str:
        attempts.append(1)
        raise error

    h.build(uow=None, expected=[OutOfStock], dead_letters=letters, dead_letter_commands=True)
    with pytest.raises(type(error)) as caught:
        h.handle(Allocate("lamp"))

    assert caught.value is error
    assert [1] == attempts  # not retried, even by a policy that retries everything
    assert [] == letters.letters
    (line,) = logs
    assert ("message_rejected", "info", "rejected") == (
        line["event"],
        line["log_level"],
        line["outcome"],
    )
    assert f"{type(error).__qualname__}: {error}" == line["error"]
    assert "exc_info" not in line


def test_an_event_handlers_expected_outcome_is_isolated_and_never_a_dead_letter(
    h: Harness, logs: list[EventDict]
) -> None:
    letters = InMemoryDeadLetters()
    ran: list[str] = []

    @h.register(uow=False)
    def reject(event: Allocated) -> None:
        raise InvalidSku(event.sku)

    @h.register(uow=False)
    def notify(event: Allocated) -> None:
        ran.append(event.sku)

    h.build(uow=None, dead_letters=letters)
    h.handle(Allocated("lamp"))

    assert (["lamp"], []) == (ran, letters.letters)
    assert ["message_rejected", "message_handled"] == [line["event"] for line in logs]


@pytest.mark.one_bus("a check of the constructor")
def test_expected_takes_exception_classes_only() -> None:
    with pytest.raises(ConfigurationError, match="expected= takes exception classes, not 'x'"):
        MessageBus(Registry(), expected=["x"])  # type: ignore[list-item]


# -- asking a built bus what it handles ------------------------------------------------


@pytest.mark.one_bus("what a built bus says of its wiring, shared code")
def test_a_built_bus_lists_what_it_handles_and_checks_required_commands_on_request() -> None:
    from messagebus import MissingHandlersError

    @attrs.frozen
    class Cancel(Command[None]):
        orderid: str

    registry = Registry()

    @registry.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        return "ok"

    @registry.register(uow=False)
    def notify(event: Allocated) -> None:
        pass

    @registry.register(uow=False)
    def audit(event: Allocated) -> None:
        pass

    bus = MessageBus(registry, dependencies={"mailer": object()})

    prefix = allocate.__qualname__.removesuffix("allocate")
    prefix = f"{__name__}.{prefix}"
    assert {
        Allocate: (prefix + "allocate",),
        Allocated: (prefix + "notify", prefix + "audit"),
    } == bus.handlers()
    bus.check([Allocate])
    with pytest.raises(MissingHandlersError, match="Cancel"):
        bus.check([Allocate, Cancel])
    assert "MessageBus(commands=1, events=1, handlers=3, dependencies=['mailer'], uow=no)" == repr(
        bus
    )


# -- start-up checks of the wiring ----------------------------------------------------


@pytest.mark.one_bus("the registry, shared code")
def test_a_registry_is_frozen_once_a_bus_is_built_from_it() -> None:
    from messagebus import FrozenRegistryError

    registry = Registry()
    MessageBus(registry)

    with pytest.raises(FrozenRegistryError):

        @registry.register(uow=False)
        def allocate(cmd: Allocate) -> str:
            return "never called"


@pytest.mark.one_bus("a start-up check, shared code")
def test_dependencies_no_handler_asks_for_are_said_once_at_start_up(
    logs: list[EventDict],
) -> None:
    from messagebus import UnusedDependencyError

    registry = Registry()

    @registry.register(uow=False)
    def notify(event: Allocated, mailer: object) -> None:
        pass

    MessageBus(registry, dependencies={"mailer": object(), "mialer": object()})
    with pytest.raises(UnusedDependencyError, match="mialer"):
        MessageBus(Registry(), dependencies={"mialer": object()}, unused_dependencies="error")
    MessageBus(Registry(), dependencies={"quiet": object()}, unused_dependencies="ignore")

    assert [("unused_dependencies", "warning")] == [
        (line["event"], line["log_level"]) for line in logs
    ]
    assert "mialer" in logs[0]["error"]


def test_an_expected_outcome_on_a_retry_is_still_an_outcome_not_a_dead_letter(
    h: Harness, logs: list[EventDict]
) -> None:
    letters = InMemoryDeadLetters()
    errors: list[Exception] = [InvalidSku("gone"), ConnectionError("blip")]

    @h.register(uow=False)
    def reject(event: Allocated) -> None:
        raise errors.pop()

    h.build(uow=None, dead_letters=letters)
    h.handle(Allocated("lamp"))

    assert [] == letters.letters
    assert ["message_attempt_failed", "message_rejected"] == [line["event"] for line in logs]


def test_a_listener_that_raises_changes_no_outcome_and_runs_nothing_twice(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    from messagebus.observe import Attempt

    charged: list[str] = []

    class Broken:
        def message_dispatched(self, message: object, metadata: object) -> None:
            raise ConnectionError("the metrics server is down")

        def attempt_finished(self, attempt: Attempt) -> None:
            raise ConnectionError("the metrics server is down")

    @h.register
    def allocate(cmd: Allocate, uow: Any) -> str:
        charged.append(cmd.sku)
        return "ok"

    h.build(listeners=[Broken()])

    assert "ok" == h.handle(Allocate("lamp"))
    assert ["lamp"] == charged
    assert "the metrics server is down" in capsys.readouterr().err


def test_a_plain_dead_letter_store_on_the_async_bus_stores_without_a_false_alarm(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = InMemoryDeadLetters()

    @h.register(uow=False)
    def fail(event: Allocated) -> None:
        raise ValueError("bad")

    h.build(uow=None, dead_letters=letters, logger=_quiet())
    h.handle(Allocated("lamp"))

    assert ["ValueError: bad"] == [letter.error for letter in letters.letters]
    assert "dead_letter_store_failed" not in capsys.readouterr().err


@pytest.mark.one_bus("what only the sync bus refuses")
def test_the_sync_bus_refuses_a_dead_letter_store_it_would_never_await() -> None:
    class AsyncStore:
        async def add(self, letter: object) -> None:
            pass

    with pytest.raises(ConfigurationError, match=r"AsyncStore.add\(\) is asynchronous"):
        MessageBus(Registry(), dead_letters=AsyncStore())  # type: ignore[arg-type]


def _quiet() -> Any:
    import structlog

    return structlog.wrap_logger(None, wrapper_class=structlog.make_filtering_bound_logger(50))
