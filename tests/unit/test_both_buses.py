"""The behaviour of DESIGN.md §3-5, run against both buses so they cannot drift apart.

Each test is written once, with plain functions as handlers, and runs on a
``Harness`` (``_buses.py``) of each kind: the ``h`` fixture.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from uuid import UUID

import attrs
import pytest
import structlog
import tenacity

from messagebus import (
    Command,
    Context,
    DispatchError,
    Event,
    Metadata,
    NoHandlerError,
    NotAMessageError,
    RetryPolicy,
)
from messagebus.observe import InMemoryDeadLetters
from messagebus.testing import FakeClock

from ._buses import Harness


@attrs.frozen
class Allocate(Command[str]):
    sku: str


@attrs.frozen
class Allocated(Event):
    sku: str
    n: int = 0


@attrs.frozen
class Followed(Event):
    n: int


class Product:
    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.allocations = 0
        self.events: list[Event] = []


def test_the_command_handlers_result_is_returned(h: Harness) -> None:
    h.register(lambda cmd, uow: f"allocated {cmd.sku}", message=Allocate)

    assert "allocated lamp" == h.handle(Allocate("lamp"))


def test_a_commands_failure_reaches_the_caller_as_the_original_exception(h: Harness) -> None:
    error = ValueError("no stock")

    @h.register
    def allocate(cmd: Allocate, uow: Any) -> str:
        raise error

    with pytest.raises(ValueError, match="no stock") as caught:
        h.handle(Allocate("lamp"))
    assert caught.value is error


def test_events_are_handled_breadth_first_in_the_order_raised(h: Harness) -> None:
    handled: list[str] = []

    @h.register
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated("a", 1))
        context.emit(Allocated("b", 2))
        return "ok"

    @h.register
    def on_allocated(event: Allocated, context: Context) -> None:
        handled.append(f"allocated {event.sku}")
        context.emit(Followed(event.n))

    @h.register
    def on_followed(event: Followed) -> None:
        handled.append(f"followed {event.n}")

    h.handle(Allocate("lamp"))

    assert ["allocated a", "allocated b", "followed 1", "followed 2"] == handled


def test_an_event_handlers_failure_stops_neither_the_others_nor_the_caller(h: Harness) -> None:
    handled: list[str] = []

    @h.register
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register
    def first(event: Allocated) -> None:
        raise ValueError("broken handler")

    @h.register
    def second(event: Allocated) -> None:
        handled.append(event.sku)

    assert "ok" == h.handle(Allocate("lamp"))
    assert ["lamp"] == handled


def test_each_attempt_gets_a_fresh_unit_of_work_committed_or_rolled_back(h: Harness) -> None:
    attempts: list[int] = []

    @h.register
    def allocate(cmd: Allocate, uow: Any) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise TimeoutError("busy")
        return "ok"

    assert "ok" == h.handle(Allocate("lamp"))
    assert [(0, 1, True), (0, 1, True), (1, 0, True)] == [
        (u.committed, u.rolled_back, u.closed) for u in h.uows
    ]
    assert 2 == len(h.waits)


def test_no_event_of_a_rolled_back_attempt_is_ever_dispatched(h: Harness) -> None:
    h.products.add(Product("lamp"))
    handled: list[int] = []

    @h.register
    def allocate(cmd: Allocate, uow: Any) -> str:
        product = uow.products.get(cmd.sku)
        product.allocations += 1
        product.events.append(Allocated(cmd.sku, product.allocations))
        if len(h.uows) == 1:
            raise TimeoutError("serialisation failure")
        return "ok"

    @h.register(uow=False)
    def on_allocated(event: Allocated) -> None:
        handled.append(event.n)

    h.handle(Allocate("lamp"))

    assert [1] == handled
    assert 1 == h.products.get("lamp").allocations


def test_a_domain_error_gets_one_attempt_and_a_transient_one_is_retried(h: Harness) -> None:
    calls: list[str] = []

    @h.register(retry=RetryPolicy(stop=tenacity.stop_after_attempt(4)))
    def allocate(cmd: Allocate, uow: Any) -> str:
        calls.append(cmd.sku)
        raise (KeyError if cmd.sku == "domain" else ConnectionError)(cmd.sku)

    with pytest.raises(KeyError):
        h.handle(Allocate("domain"))
    with pytest.raises(ConnectionError):
        h.handle(Allocate("transient"))

    assert ["domain"] + ["transient"] * 4 == calls


def test_a_raised_event_is_caused_by_the_command_and_shares_its_correlation(h: Harness) -> None:
    seen: dict[str, Metadata] = {}

    @h.register
    def allocate(cmd: Allocate, context: Context, metadata: Metadata) -> str:
        seen["command"] = metadata
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register
    def on_allocated(event: Allocated, metadata: Metadata) -> None:
        seen["event"] = metadata

    given = Metadata.new()
    h.handle(Allocate("lamp"), metadata=given)

    assert given == seen["command"]
    assert (given.message_id, given.correlation_id) == (
        seen["event"].causation_id,
        seen["event"].correlation_id,
    )


def test_a_command_without_a_handler_and_a_non_message_are_refused(h: Harness) -> None:
    h.build()
    with pytest.raises(NoHandlerError, match="Allocate"):
        h.handle(Allocate("lamp"))
    with pytest.raises(NotAMessageError, match="dict"):
        h.handle({"sku": "lamp"})


def test_an_event_with_no_handlers_is_fine_and_its_followers_are_handled(h: Harness) -> None:
    handled: list[int] = []

    @h.register
    def on_allocated(event: Allocated, context: Context) -> None:
        context.emit(Followed(event.n))

    @h.register
    def on_followed(event: Followed) -> None:
        handled.append(event.n)

    h.handle(Allocated("lamp", 7))
    h.handle(Followed(8))

    assert [7, 8] == handled


class Recording:
    def __init__(self) -> None:
        self.dispatched: list[tuple[str, Any]] = []
        self.attempts: list[tuple[str, int, str]] = []

    def message_dispatched(self, message: Any, metadata: Metadata) -> None:
        self.dispatched.append((type(message).__name__, metadata.causation_id))

    def attempt_finished(self, attempt: Any) -> None:
        self.attempts.append((attempt.handler.rsplit(".", 1)[-1], attempt.attempt, attempt.outcome))


def test_listeners_are_told_of_every_message_and_every_attempt(h: Harness) -> None:
    listener = Recording()
    calls: list[int] = []

    @h.register
    def allocate(cmd: Allocate, context: Context, metadata: Metadata) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("busy")
        context.emit(Allocated(cmd.sku))
        return str(metadata.message_id)

    @h.register
    def on_allocated(event: Allocated) -> None:
        raise ValueError("broken")

    h.build(listeners=[listener])
    command_id = h.handle(Allocate("lamp"))

    assert [("Allocate", None), ("Allocated", UUID(command_id))] == listener.dispatched
    assert [
        ("allocate", 1, "retrying"),
        ("allocate", 2, "succeeded"),
        ("on_allocated", 1, "failed"),
    ] == listener.attempts


def test_an_event_handling_given_up_on_is_stored_as_a_dead_letter(h: Harness) -> None:
    store = InMemoryDeadLetters()

    @h.register(uow=False)
    def on_allocated(event: Allocated) -> None:
        raise ValueError("no such warehouse")

    h.build(dead_letters=store)
    given = Metadata.new()
    h.handle(Allocated("lamp", 3), metadata=given)

    [letter] = store.letters
    assert ("Allocated", 1, {"sku": "lamp", "n": 3}) == (
        letter.message_name,
        letter.message_version,
        letter.payload,
    )
    assert letter.handler.endswith("on_allocated")
    assert (1, "ValueError: no such warehouse") == (letter.attempts, letter.error)
    assert "no such warehouse" in letter.traceback
    assert (Allocated("lamp", 3), given) == h.bus.serializer.load_with_metadata(letter.wire())


def test_a_failed_command_is_a_dead_letter_only_when_asked(h: Harness) -> None:
    store = InMemoryDeadLetters()

    @h.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        raise KeyError(cmd.sku)

    h.build(dead_letters=store)
    with pytest.raises(KeyError):
        h.handle(Allocate("lamp"))
    assert [] == store.letters

    h.build(dead_letters=store, dead_letter_commands=True)
    with pytest.raises(KeyError):
        h.handle(Allocate("lamp"))
    assert ["Allocate"] == [letter.message_name for letter in store.letters]


def test_redelivery_runs_only_the_named_handler_and_stores_no_new_letter(h: Harness) -> None:
    store = InMemoryDeadLetters()
    handled: list[str] = []
    fixed = [False]

    @h.register(uow=False)
    def first(event: Allocated) -> None:
        handled.append("first")

    @h.register(uow=False)
    def second(event: Allocated) -> None:
        if not fixed[0]:
            raise ValueError("bug")
        handled.append("second")

    h.build(dead_letters=store)
    h.handle(Allocated("lamp"))
    [letter] = store.letters
    message, metadata = h.bus.serializer.load_with_metadata(letter.wire())

    with pytest.raises(ValueError, match="bug"):
        h.redeliver(message, handler=letter.handler, metadata=metadata)
    fixed[0] = True
    h.redeliver(message, handler=letter.handler, metadata=metadata)

    assert ["first", "second"] == handled
    assert 1 == len(store.letters)
    with pytest.raises(DispatchError, match="nobody"):
        h.redeliver(message, handler="nobody")


def _quiet_logger() -> Any:
    """A logger with INFO filtered out: successes are not logged, so plain handlers are bare."""
    return structlog.wrap_logger(
        structlog.PrintLogger(), wrapper_class=structlog.make_filtering_bound_logger(40)
    )


def _unwritable_logger() -> Any:
    """A logger whose every line fails, as one writing to a file closed under it."""

    def broken(logger: Any, method: str, event: Any) -> Any:
        raise OSError("the log file is closed")

    return structlog.wrap_logger(structlog.PrintLogger(), processors=[broken])


def test_handlers_that_need_nothing_per_attempt_keep_every_promise(h: Harness) -> None:
    # No unit of work, no context, no metadata, no logs: the shortest path.
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

    h.build(dead_letters=store, logger=_quiet_logger(), uow=None)

    assert "ok" == h.handle(Allocate("lamp"))
    h.handle(Allocated("lamp"))

    assert ["allocate", "allocate", "broken", "flaky", "flaky"] == calls
    assert [("Allocated", 1)] == [(d.message_name, d.attempts) for d in store.letters]
    assert 2 == len(h.waits)


@attrs.frozen
class Noted(Event):
    n: int


def test_events_whose_handlers_need_nothing_keep_their_place_in_the_order(h: Harness) -> None:
    # Noted's handler needs nothing per attempt (it is called directly);
    # Allocated's emits a Followed. Breadth first all the same.
    handled: list[str] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        for event in (Noted(1), Allocated("a", 1), Noted(2), Allocated("b", 2), Noted(3)):
            context.emit(event)
        return "ok"

    @h.register(uow=False)
    def on_noted(event: Noted) -> None:
        handled.append(f"noted {event.n}")

    @h.register(uow=False)
    def on_allocated(event: Allocated, context: Context) -> None:
        handled.append(f"allocated {event.sku}")
        context.emit(Followed(event.n))

    @h.register(uow=False)
    def on_followed(event: Followed) -> None:
        handled.append(f"followed {event.n}")

    h.build(logger=_quiet_logger(), uow=None)
    assert "ok" == h.handle(Allocate("lamp"))

    assert [
        "noted 1",
        "allocated a",
        "noted 2",
        "allocated b",
        "noted 3",
        "followed 1",
        "followed 2",
    ] == handled


def test_a_directly_called_event_handlers_failure_is_retried_and_kept_with_its_cause(
    h: Harness,
) -> None:
    store = InMemoryDeadLetters()
    calls: list[int] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Noted(1))
        context.emit(Noted(2))
        return "ok"

    @h.register(uow=False)
    def on_noted(event: Noted) -> None:
        calls.append(event.n)
        if event.n == 1:
            raise ConnectionError("reset")  # transient: retried, then given up

    h.build(
        logger=_quiet_logger(),
        uow=None,
        dead_letters=store,
        retry=RetryPolicy(stop=tenacity.stop_after_attempt(2)),
    )
    command_id = UUID(int=7)
    metadata = Metadata(command_id, command_id, None, Metadata.new().created_at)

    assert "ok" == h.handle(Allocate("lamp"), metadata=metadata)

    assert [1, 1, 2] == calls
    (letter,) = store.letters
    assert ("Noted", 2) == (letter.message_name, letter.attempts)
    assert str(command_id) == letter.metadata["causation_id"]
    assert str(command_id) == letter.metadata["correlation_id"]


def test_per_attempt_parameters_may_follow_dependencies_or_be_keyword_only(h: Harness) -> None:
    seen: list[tuple[str, str]] = []

    @h.register
    def allocate(cmd: Allocate, prefix: str, uow: Any, context: Context) -> str:
        context.emit(Allocated(cmd.sku))
        return f"{prefix} {cmd.sku} {uow is context.uow}"

    @h.register(uow=False)
    def on_allocated(event: Allocated, *, metadata: Metadata, context: Context) -> None:
        seen.append((event.sku, str(metadata.causation_id == context.metadata.causation_id)))

    h.build(dependencies={"prefix": "allocated"})

    assert "allocated lamp True" == h.handle(Allocate("lamp"))
    assert [("lamp", "True")] == seen
    assert [(1, 0, True)] == [(u.committed, u.rolled_back, u.closed) for u in h.uows]


def test_quiet_handlers_that_need_a_context_are_retried_like_the_others(h: Harness) -> None:
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

    h.build(logger=_quiet_logger(), uow=None)

    assert "ok" == h.handle(Allocate("lamp"))
    assert ["allocate", "allocate", "on_allocated", "on_allocated", "on_followed"] == calls
    assert 2 == len(h.waits)


class PlainLogger:
    """A logger with neither bind() nor a level to ask: given every field on each call."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))


def test_a_logger_without_bind_gets_every_field_of_every_attempt(h: Harness) -> None:
    logger = PlainLogger()

    @h.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        if cmd.sku == "broken":
            raise ValueError("bug")
        return "ok"

    h.build(logger=logger, uow=None, retry=RetryPolicy(stop=tenacity.stop_after_attempt(2)))
    h.handle(Allocate("lamp"))
    with pytest.raises(ValueError, match="bug"):
        h.handle(Allocate("broken"))

    assert [("info", "message_handled"), ("error", "message_failed")] == [
        (level, event) for level, event, _ in logger.lines
    ]
    for _, _, fields in logger.lines:
        assert {
            "message_name": "Allocate",
            "message_kind": "command",
            "message_version": 1,
            "handler": f"{__name__}.test_a_logger_without_bind_gets_every_field_of_every_attempt"
            ".<locals>.allocate",
        }.items() <= fields.items()
    # And those of each attempt.
    assert [("succeeded", 1, {"sku": "lamp"}), ("failed", 1, {"sku": "broken"})] == [
        (fields["outcome"], fields["attempt"], fields["payload"]) for _, _, fields in logger.lines
    ]
    for _, _, fields in logger.lines:
        assert {"message_id", "correlation_id", "causation_id", "created_at", "duration_ms"} <= (
            fields.keys()
        )


def test_a_log_line_that_cannot_be_written_changes_no_outcome(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    # A processor that raises, or a log file closed under a bus built before:
    # the attempt succeeded (and committed) all the same, its events follow.
    logger = _unwritable_logger()
    handled: list[str] = []
    attempts: list[int] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise TimeoutError("busy")  # retried: a retry line, then a success line
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register(uow=False)
    def on_allocated(event: Allocated) -> None:
        handled.append(event.sku)
        raise ValueError("bug")  # given up on: a failure line

    h.build(logger=logger, uow=None)

    assert "ok" == h.handle(Allocate("lamp"))
    assert ["lamp"] == handled
    err = capsys.readouterr().err
    for event in ("message_attempt_failed", "message_handled", "message_failed"):
        assert f"messagebus: could not write the log line '{event}': OSError" in err


class RefusingStore(InMemoryDeadLetters):
    """A dead-letter store that is down."""

    def add(self, letter: Any) -> None:
        raise ConnectionError("the store is down")


def test_a_letter_the_store_refuses_is_logged_whole_and_handling_goes_on(h: Harness) -> None:
    handled: list[str] = []

    @h.register(uow=False)
    def broken(event: Allocated) -> None:
        raise ValueError("bug")

    @h.register(uow=False)
    def fine(event: Allocated) -> None:
        handled.append(event.sku)

    with structlog.testing.capture_logs() as logs:
        h.build(uow=None, dead_letters=RefusingStore())
        h.handle(Allocated("lamp"))

    assert ["lamp"] == handled
    (refused,) = [line for line in logs if line["event"] == "dead_letter_store_failed"]
    assert {
        "message_name": "Allocated",
        "handler": f"{__name__}.test_a_letter_the_store_refuses_is_logged_whole_and_handling"
        "_goes_on.<locals>.broken",
        "payload": {"sku": "lamp", "n": 0},
        "error": "ValueError: bug",
    }.items() <= refused.items()


def test_a_refused_letter_that_cannot_be_logged_either_goes_to_stderr(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    @h.register(uow=False)
    def broken(event: Allocated) -> None:
        raise ValueError("bug")

    h.build(uow=None, dead_letters=RefusingStore(), logger=_unwritable_logger())
    h.handle(Allocated("lamp"))

    err = capsys.readouterr().err
    assert "could not write the log line 'dead_letter_store_failed'" in err
    assert "messagebus: the dead letter: DeadLetter(message_name='Allocated'" in err
    assert "'sku': 'lamp'" in err


def test_every_handler_of_an_event_sees_its_one_id_even_when_called_directly(
    h: Harness,
) -> None:
    store = InMemoryDeadLetters()

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register(uow=False)
    def first(event: Allocated) -> None:
        raise ValueError("bug")

    @h.register(uow=False)
    def second(event: Allocated) -> None:
        raise ValueError("bug")

    h.build(logger=_quiet_logger(), uow=None, dead_letters=store)
    h.handle(Allocate("lamp"))  # an event raised by a command
    h.handle(Allocated("sofa"))  # an event handled at the root

    lamp_1, lamp_2, sofa_1, sofa_2 = (letter.metadata["message_id"] for letter in store.letters)
    assert lamp_1 == lamp_2
    assert sofa_1 == sofa_2
    assert lamp_1 != sofa_1


def test_every_handler_of_an_event_raised_on_redelivery_sees_its_one_id(h: Harness) -> None:
    store = InMemoryDeadLetters()
    given = Metadata.new()

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register(uow=False)
    def first(event: Allocated) -> None:
        raise ValueError("bug")

    @h.register(uow=False)
    def second(event: Allocated) -> None:
        raise ValueError("bug")

    h.build(logger=_quiet_logger(), uow=None, dead_letters=store)
    name = f"{__name__}.test_every_handler_of_an_event_raised_on_redelivery_sees_its_one_id"
    assert "ok" == h.redeliver(
        Allocate("lamp"), handler=f"{name}.<locals>.allocate", metadata=given
    )

    first_letter, second_letter = (letter.metadata for letter in store.letters)
    assert first_letter["message_id"] == second_letter["message_id"]
    assert [str(given.message_id)] * 2 == [
        first_letter["causation_id"],
        second_letter["causation_id"],
    ]


def keywords_only(handler: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator whose wrapper takes the message and keywords: its signature is the handler's."""

    @functools.wraps(handler)
    def wrapper(message: Any, **dependencies: Any) -> Any:
        return handler(message, **dependencies)

    return wrapper


def test_a_decorated_handler_that_takes_keywords_gets_its_context_and_uow_as_keywords(
    h: Harness,
) -> None:
    @h.register(uow=False)
    @keywords_only
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register
    @keywords_only
    def on_allocated(event: Allocated, uow: Any) -> None:
        uow.products.add(Product(event.sku))  # committed by the bus

    assert "ok" == h.handle(Allocate("lamp"))
    assert "lamp" == h.products.get("lamp").sku


# -- a handler that needs only its Context, attempts not logged ---------------------
# Such a handler is called by handle() itself, and its message's id and time are
# fixed when first needed, not before the call.


def test_a_command_whose_time_is_fixed_late_is_still_older_than_its_events(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts: list[Context] = []
    seen: list[Metadata] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        contexts.append(context)
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register(uow=False)
    def on_allocated(event: Allocated, metadata: Metadata) -> None:
        seen.append(metadata)

    h.build(logger=_quiet_logger(), uow=None, clock=FakeClock(tick=1e-6))
    assert "ok" == h.handle(Allocate("lamp"))

    command = contexts[0].metadata  # asked for after the dispatch: fixed by its event
    (event,) = seen
    assert command.message_id == event.causation_id
    assert command.created_at < event.created_at


def test_a_context_handler_retried_keeps_one_id_and_only_the_last_attempts_events(
    h: Harness,
) -> None:
    ids: list[UUID] = []
    causes: list[tuple[int, UUID | None]] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.sku, n=len(ids)))
        ids.append(context.metadata.message_id)
        if len(ids) < 3:
            raise TimeoutError("database busy")
        return "ok"

    @h.register(uow=False)
    def on_allocated(event: Allocated, metadata: Metadata) -> None:
        causes.append((event.n, metadata.causation_id))

    h.build(logger=_quiet_logger(), uow=None)
    assert "ok" == h.handle(Allocate("lamp"))

    assert [ids[0]] * 3 == ids
    assert [(2, ids[0])] == causes
    assert 2 == len(h.waits)


def test_a_context_handler_given_metadata_sees_it_and_its_events_name_it(h: Harness) -> None:
    given = Metadata.new()
    seen: list[Metadata] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        seen.append(context.metadata)
        context.emit(Allocated(cmd.sku))
        return "ok"

    @h.register(uow=False)
    def on_allocated(event: Allocated, metadata: Metadata) -> None:
        seen.append(metadata)

    h.build(logger=_quiet_logger(), uow=None)
    assert "ok" == h.handle(Allocate("lamp"), metadata=given)

    command, event = seen
    assert given == command
    assert (given.message_id, given.correlation_id) == (event.causation_id, event.correlation_id)


def test_a_context_handler_that_gives_up_is_logged_with_its_id_and_time(h: Harness) -> None:
    lines: list[dict[str, Any]] = []

    def keep(logger: Any, method: str, event: dict[str, Any]) -> str:
        lines.append(event)
        return ""

    @h.register(uow=False, retry=RetryPolicy(stop=tenacity.stop_after_attempt(1)))
    def allocate(cmd: Allocate, context: Context) -> str:
        raise ValueError("bug")

    logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[keep],
        wrapper_class=structlog.make_filtering_bound_logger(40),
    )
    h.build(logger=logger, uow=None)
    with pytest.raises(ValueError, match="bug"):
        h.handle(Allocate("lamp"))

    (failed,) = lines
    assert "message_failed" == failed["event"]
    assert failed["message_id"] == failed["correlation_id"]
    assert UUID(failed["message_id"]).version == 4
    assert failed["created_at"].endswith("+00:00")
