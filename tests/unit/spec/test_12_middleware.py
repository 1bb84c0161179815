"""DESIGN.md §12: middleware wraps every handler attempt, on both buses.

Middleware is written once here, as a plain function; for the async bus
``chain()`` turns it into an ``async def`` with the same behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import structlog

from messagebus import (
    AsyncMessageBus,
    Command,
    ConfigurationError,
    Context,
    Event,
    MessageBus,
    Metadata,
    Registry,
    RetryPolicy,
)
from messagebus.middleware import HandlerCall
from messagebus.observe import InMemoryDeadLetters

from ._buses import Harness


@attrs.frozen
class Allocate(Command[str]):
    sku: str


@attrs.frozen
class Allocated(Event):
    sku: str


Before = Callable[[HandlerCall], None]
After = Callable[[HandlerCall, Any], Any]


def _pass(call: HandlerCall, result: Any) -> Any:
    return result


def chain(h: Harness, *links: tuple[Before, After]) -> list[Any]:
    """Middleware for the harness's kind of bus: ``before(call)``, the next step, ``after``.

    ``after(call, result)`` returns what the middleware returns.
    """
    middleware: list[Any] = []
    for before, after in links:
        if h.is_async:

            async def link(
                call: HandlerCall, call_next: Any, before: Before = before, after: After = after
            ) -> Any:
                before(call)
                return after(call, await call_next(call))

        else:

            def link(
                call: HandlerCall, call_next: Any, before: Before = before, after: After = after
            ) -> Any:
                before(call)
                return after(call, call_next(call))

        middleware.append(link)
    return middleware


def test_a_middleware_wraps_every_attempt_of_commands_and_events(h: Harness) -> None:
    seen: list[tuple[Any, ...]] = []
    failures = [ConnectionError("blip")]

    @h.register
    def allocate(cmd: Allocate, uow: Any) -> str:
        if failures:
            raise failures.pop()
        return "ok"

    @h.register(uow=False)
    def notify(event: Allocated) -> None:
        pass

    def record(call: HandlerCall) -> None:
        seen.append((call.kind, call.handler.rsplit(".", 1)[-1], call.attempt))

    h.build(middleware=chain(h, (record, _pass)))
    assert "ok" == h.handle(Allocate("lamp"))
    h.handle(Allocated("lamp"))

    assert [
        ("command", "allocate", 1),
        ("command", "allocate", 2),
        ("event", "notify", 1),
    ] == seen


def test_middlewares_run_in_order_the_first_outermost(h: Harness) -> None:
    seen: list[str] = []

    def named(name: str) -> tuple[Before, After]:
        def before(call: HandlerCall) -> None:
            seen.append(f"{name} in")

        def after(call: HandlerCall, result: Any) -> Any:
            seen.append(f"{name} out")
            return result

        return before, after

    @h.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        seen.append("handler")
        return "ok"

    h.build(uow=None, middleware=chain(h, named("a"), named("b")))
    assert "ok" == h.handle(Allocate("lamp"))

    assert ["a in", "b in", "handler", "b out", "a out"] == seen


def test_a_middleware_gets_what_the_handler_returned_and_may_return_another(
    h: Harness,
) -> None:
    got: list[Any] = []

    def upper(call: HandlerCall, result: Any) -> Any:
        got.append(result)
        return result.upper() if isinstance(result, str) else result

    @h.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        return f"allocated {cmd.sku}"

    h.build(uow=None, middleware=chain(h, (lambda call: None, upper)))

    assert "ALLOCATED LAMP" == h.handle(Allocate("lamp"))
    assert ["allocated lamp"] == got


def test_the_unit_of_work_is_committed_inside_the_step_a_middleware_wraps(
    h: Harness,
) -> None:
    committed: list[bool] = []

    def after(call: HandlerCall, result: Any) -> Any:
        committed.append(h.uows[-1].committed)
        return result

    @h.register
    def allocate(cmd: Allocate, uow: Any) -> str:
        return "ok"

    h.build(middleware=chain(h, (lambda call: None, after)))
    h.handle(Allocate("lamp"))

    assert [True] == committed


def test_a_middleware_sees_the_message_and_the_metadata_the_handler_sees(h: Harness) -> None:
    seen: list[Any] = []

    def before(call: HandlerCall) -> None:
        seen.append((call.message, call.metadata))

    @h.register(uow=False)
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.sku))
        return "ok"

    handler_saw: list[Metadata] = []

    @h.register(uow=False)
    def on_allocated(event: Allocated, metadata: Metadata) -> None:
        handler_saw.append(metadata)

    h.build(uow=None, middleware=chain(h, (before, _pass)))
    h.handle(Allocate("lamp"))

    (command, command_metadata), (event, event_metadata) = seen
    assert (Allocate("lamp"), Allocated("lamp")) == (command, event)
    assert handler_saw == [event_metadata]
    assert command_metadata.message_id == event_metadata.causation_id


def test_a_middleware_that_raises_fails_the_attempt_and_an_event_handler_is_isolated(
    h: Harness,
) -> None:
    letters = InMemoryDeadLetters()
    ran: list[str] = []

    def refuse_audit(call: HandlerCall) -> None:
        if call.handler.endswith("audit"):
            raise PermissionError("audit is closed")

    @h.register(uow=False)
    def audit(event: Allocated) -> None:
        ran.append("audit")

    @h.register(uow=False)
    def notify(event: Allocated) -> None:
        ran.append("notify")

    h.build(
        uow=None,
        middleware=chain(h, (refuse_audit, _pass)),
        dead_letters=letters,
        logger=structlog.wrap_logger(None, wrapper_class=structlog.make_filtering_bound_logger(50)),
    )
    h.handle(Allocated("lamp"))

    assert ["notify"] == ran
    assert ["PermissionError: audit is closed"] == [letter.error for letter in letters.letters]


def test_retries_go_through_the_chain_again_with_the_next_attempt_number(h: Harness) -> None:
    attempts: list[int] = []
    failures = [TimeoutError("slow"), TimeoutError("slow")]

    def count(call: HandlerCall) -> None:
        attempts.append(call.attempt)

    @h.register(uow=False, retry=RetryPolicy())
    def allocate(cmd: Allocate) -> str:
        if failures:
            raise failures.pop()
        return "ok"

    h.build(uow=None, middleware=chain(h, (count, _pass)))

    assert "ok" == h.handle(Allocate("lamp"))
    assert [1, 2, 3] == attempts


def test_a_timing_middleware_as_the_docs_show_it(h: Harness) -> None:
    durations: dict[str, float] = {}

    started: list[float] = []

    def start(call: HandlerCall) -> None:
        started.append(time.perf_counter())

    def stop(call: HandlerCall, result: Any) -> Any:
        durations[call.handler.rsplit(".", 1)[-1]] = time.perf_counter() - started.pop()
        return result

    @h.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        return "ok"

    h.build(uow=None, middleware=chain(h, (start, stop)))
    h.handle(Allocate("lamp"))

    assert ["allocate"] == list(durations)
    assert durations["allocate"] >= 0


@pytest.mark.one_bus("a check of each bus's constructor")
def test_the_sync_bus_refuses_async_middleware_and_the_async_bus_plain_middleware() -> None:
    registry = Registry()

    async def async_middleware(call: HandlerCall, call_next: Any) -> Any:
        return await call_next(call)

    def plain_middleware(call: HandlerCall, call_next: Any) -> Any:
        return call_next(call)

    with pytest.raises(ConfigurationError, match="async_middleware"):
        MessageBus(registry, middleware=[async_middleware])
    with pytest.raises(ConfigurationError, match="plain_middleware"):
        AsyncMessageBus(registry, middleware=[plain_middleware])
    with pytest.raises(ConfigurationError, match="must be callable"):
        MessageBus(registry, middleware=["not a function"])  # type: ignore[list-item]


@pytest.mark.one_bus("the repr of what middleware is given, the same on both")
def test_a_handler_call_shows_what_is_handled() -> None:
    registry = Registry()
    seen: list[str] = []

    def remember(call: HandlerCall, call_next: Any) -> Any:
        seen.append(repr(call))
        return call_next(call)

    @registry.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        return "ok"

    MessageBus(registry, middleware=[remember]).handle(Allocate("lamp"))

    assert [
        f"HandlerCall(message=Allocate(sku='lamp'), handler='{__name__}."
        "test_a_handler_call_shows_what_is_handled.<locals>.allocate', attempt=1)"
    ] == seen
