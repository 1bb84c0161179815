"""Given / when / then: a test of a use case, as it would be told.

Given what happened before, when a command is handled, then these events were
raised, or this error reached the caller, or the state is now this. A failing
``then`` says what was expected, what happened (a diff of the messages), and
everything the bus did meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from messagebus._async_bus import AsyncMessageBus
from messagebus._bus import MessageBus
from messagebus._registry import handler_name
from messagebus.messages import Command, Event, Message, Metadata

from ._diff import diff_lines, indent, plural
from ._recorder import HandlerRef, Recorder, recorders_of

__all__ = ["AsyncScenario", "Scenario"]

B = TypeVar("B")
S = TypeVar("S", bound="_Then[Any]")

_MISSING: Any = object()


def _find_recorder(bus: object, recorder: Recorder | None) -> Recorder:
    listeners = getattr(bus, "_listeners", ())
    if recorder is None:
        found = recorders_of(listeners)
        if len(found) == 1:
            return found[0]
        raise ValueError(
            "a scenario needs a bus built with one Recorder among its listeners "
            f"(it has {len(found)}): build it with listeners=[Recorder()], "
            "or pass the recorder: Scenario(bus, recorder)"
        )
    if not any(listener is recorder for listener in listeners):
        raise ValueError(
            "the bus does not tell this recorder what it does: build the bus with "
            "listeners=[recorder]"
        )
    return recorder


def _is_subsequence(expected: Sequence[object], actual: Sequence[object]) -> bool:
    remaining = iter(actual)
    return all(any(item == candidate for candidate in remaining) for item in expected)


class _Then(Generic[B]):
    """What both scenarios share: the state of the scenario and the ``then`` checks."""

    def __init__(self, bus: B, recorder: Recorder | None = None) -> None:
        self.bus = bus
        self.recorder: Recorder = _find_recorder(bus, recorder)
        self._message: Message | None = None
        self._correlation_id: Any = None
        self._result: Any = None
        self._error: Exception | None = None

    # -- the steps -----------------------------------------------------------

    def _before_given(self) -> None:
        if self._message is not None:
            raise RuntimeError("given() comes before when(): the scenario has already run")

    def _given_failed(self, message: Message, error: Exception) -> AssertionError:
        return AssertionError(
            f"given {message!r}: it failed with {type(error).__qualname__}: {error}\n"
            "(a given sets the scene: it is expected to succeed)"
        )

    def _check_given(self, message: Message, metadata: Metadata) -> None:
        __tracebackhide__ = True
        recorded = self.recorder.correlated(metadata.correlation_id)
        if recorded.failed():
            raise AssertionError(
                f"given {message!r}: a handler gave up, so the scene is not what the "
                f"test expects:\n{indent(recorded.tree().splitlines())}"
            )

    def _before_when(self, message: Message) -> Metadata:
        if self._message is not None:
            raise RuntimeError(
                f"a scenario has one when(), and it was {self._message!r}; "
                "start a new scenario for another"
            )
        if not isinstance(message, (Command, Event)):
            raise TypeError(f"when() takes a Command or an Event, not {message!r}")
        metadata = Metadata.new()
        self._message = message
        self._correlation_id = metadata.correlation_id
        return metadata

    # -- what the when did ---------------------------------------------------

    @property
    def message(self) -> Message:
        """The message of the ``when`` step."""
        return self._require_when()

    @property
    def error(self) -> Exception | None:
        """The exception that the ``when`` step raised, or None."""
        self._require_when()
        return self._error

    @property
    def result(self) -> Any:
        """What the ``when`` step returned (for a command, its handler's result).

        Raises:
            AssertionError: The ``when`` step failed (its error is the cause).
        """
        __tracebackhide__ = True
        self._require_success("result")
        return self._result

    @property
    def recorded(self) -> Recorder:
        """What the bus did for the ``when`` step: the message and all that followed."""
        self._require_when()
        return self.recorder.correlated(self._correlation_id)

    def _require_when(self) -> Message:
        if self._message is None:
            raise RuntimeError("then comes after when(): the scenario has not run yet")
        return self._message

    def _require_success(self, step: str) -> None:
        __tracebackhide__ = True
        message = self._require_when()
        if self._error is not None:
            error = self._error
            raise AssertionError(
                f"{step}: when {message!r} raised {type(error).__qualname__}: {error}\n"
                f"what the bus did:\n{indent(self.recorded.tree().splitlines())}"
            ) from error

    def _report(self, summary: str, *details: str) -> AssertionError:
        lines = [summary, *details, "what the bus did:", indent(self.recorded.tree().splitlines())]
        return AssertionError("\n".join(lines))

    # -- then ----------------------------------------------------------------

    def then_raised(self: S, *events: Event, exactly: bool = True) -> S:
        """Check the events raised while handling the ``when`` message (and what followed).

        Args:
            events: The events expected, in the order the bus dispatched them
                (breadth first, in the order they were raised).
            exactly: True: these events and no others. False: these among
                others, in this order.

        Raises:
            AssertionError: They differ; the message shows a diff of the
                events' reprs, and what the bus did.
        """
        __tracebackhide__ = True
        self._require_success("then_raised")
        expected = list(events)
        raised = self.recorded.raised
        if exactly and expected == raised:
            return self
        if not exactly and _is_subsequence(expected, raised):
            return self
        which = "" if exactly else " among those raised, in this order"
        summary = (
            f"then_raised: expected {plural(len(expected), 'event')}{which}; "
            f"{self._message!r} raised {plural(len(raised), 'event')}:"
        )
        raise self._report(summary, indent(diff_lines(expected, raised, actual_label="raised")), "")

    def then_nothing_raised(self: S) -> S:
        """Check that the ``when`` step succeeded and raised no event."""
        __tracebackhide__ = True
        return self.then_raised()

    def then_error(
        self: S, exception_type: type[BaseException] = Exception, *, match: str | None = None
    ) -> S:
        """Check that the ``when`` step failed with this exception (and left the caller).

        Args:
            exception_type: The exception's type (or a base of it).
            match: A regular expression that ``str(error)`` must match (``re.search``).
        """
        __tracebackhide__ = True
        message = self._require_when()
        error = self._error
        if error is None:
            raise self._report(
                f"then_error: expected {message!r} to raise {exception_type.__qualname__}, "
                f"but it returned {self._result!r}"
            )
        if not isinstance(error, exception_type):
            raise self._report(
                f"then_error: expected {message!r} to raise {exception_type.__qualname__}, "
                f"but it raised {type(error).__qualname__}: {error}"
            ) from error
        if match is not None and not re.search(match, str(error)):
            raise self._report(
                f"then_error: {message!r} raised {type(error).__qualname__}, but its text "
                f"{str(error)!r} does not match {match!r}"
            ) from error
        return self

    def then_returned(self: S, expected: object) -> S:
        """Check what the ``when`` step returned (a command's result)."""
        __tracebackhide__ = True
        self._require_success("then_returned")
        if self._result != expected:
            raise self._report(
                f"then_returned: expected {expected!r}, but {self._message!r} "
                f"returned {self._result!r}"
            )
        return self

    def then_state(self: S, check: Callable[[], object], expected: object = _MISSING) -> S:
        """Check the state after the ``when`` step.

        Args:
            check: Called with no argument. Alone, it may assert (its
                ``AssertionError`` is the failure) or return a bool (False
                fails). With ``expected``, it returns the value to compare.
            expected: What ``check()`` must equal.
        """
        __tracebackhide__ = True
        self._require_success("then_state")
        value = check()
        if expected is not _MISSING:
            if value != expected:
                name = getattr(check, "__name__", repr(check))
                raise self._report(
                    f"then_state: {name}() is not what was expected",
                    indent(diff_lines(_lines(expected), _lines(value))),
                    "",
                )
        elif value is False:
            name = getattr(check, "__name__", repr(check))
            raise self._report(f"then_state: {name}() returned False")
        return self

    def then_handler_failed(
        self: S,
        handler: HandlerRef,
        exception_type: type[BaseException] = Exception,
        *,
        match: str | None = None,
    ) -> S:
        """Check that a handler gave up (after its retries) with this exception.

        For an event handler, whose failure is isolated: the ``when`` step
        itself may well have succeeded.
        """
        __tracebackhide__ = True
        self._require_when()
        failures = self.recorded.failed(handler=handler)
        for failure in failures:
            error = failure.error
            if isinstance(error, exception_type) and (
                match is None or re.search(match, str(error))
            ):
                return self
        wanted = exception_type.__qualname__ + ("" if match is None else f" matching {match!r}")
        name = handler if isinstance(handler, str) else handler_name(handler)
        found = ", ".join(f"{type(f.error).__qualname__}: {f.error}" for f in failures)
        raise self._report(
            f"then_handler_failed: expected {name} to give up with {wanted}; "
            + (f"it gave up with {found}" if failures else "it did not give up")
        )

    def __repr__(self) -> str:
        step = "given" if self._message is None else f"when {self._message!r}"
        return f"<{type(self).__name__} at {step}>"


def _lines(value: object) -> list[object]:
    """A value as the items of a diff: a list's items, a dict's items, or itself."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict):
        return [_Item(key, item) for key, item in value.items()]
    return [value]


class _Item:
    """A dict's item, shown as ``key: value``."""

    def __init__(self, key: object, value: object) -> None:
        self.key = key
        self.value = value

    def __repr__(self) -> str:
        return f"{self.key!r}: {self.value!r}"


class Scenario(_Then[MessageBus]):
    """Given / when / then, on a :class:`~messagebus.MessageBus`.

    ::

        scenario = Scenario(bus)          # the bus has a Recorder among its listeners
        scenario.given(CreateBatch("b1", "LAMP", 10))
        scenario.when(Allocate("o1", "LAMP", 2))
        scenario.then_raised(Allocated("o1", "LAMP", 2, "b1"))

    Each step returns the scenario, so the steps may be chained. ``given``
    handles messages through the bus, to set the scene; ``when`` handles one
    message and keeps its result or its error (it does not raise it); each
    ``then`` checks one thing about the ``when`` step only, and fails with an
    ``AssertionError`` that says what was expected and shows what the bus did.

    Args:
        bus: The bus, built with a :class:`Recorder` among its ``listeners``.
        recorder: That recorder; found among the bus's listeners when not given.

    Attributes:
        bus: The bus.
        recorder: The recorder that listens to it.
    """

    def given(self, *messages: Message) -> Scenario:
        """Handle these messages (commands or events), in order, to set the scene.

        Raises:
            AssertionError: One of them failed, or a handler gave up on one.
        """
        __tracebackhide__ = True
        self._before_given()
        bus: Any = self.bus  # handle() is typed for a Command or an Event; these are either
        for message in messages:
            metadata = Metadata.new()
            try:
                bus.handle(message, metadata=metadata)
            except Exception as error:
                raise self._given_failed(message, error) from error
            self._check_given(message, metadata)
        return self

    def when(self, message: Message) -> Scenario:
        """Handle the message under test; its result or error is kept for the ``then`` steps."""
        metadata = self._before_when(message)
        bus: Any = self.bus
        try:
            self._result = bus.handle(message, metadata=metadata)
        except Exception as error:
            self._error = error
        return self


class AsyncScenario(_Then[AsyncMessageBus]):
    """Given / when / then, on an :class:`~messagebus.AsyncMessageBus`.

    As :class:`Scenario`, with ``given`` and ``when`` awaited::

        scenario = AsyncScenario(bus)
        await scenario.given(CreateBatch("b1", "LAMP", 10))
        await scenario.when(Allocate("o1", "LAMP", 2))
        scenario.then_raised(Allocated("o1", "LAMP", 2, "b1"))

    Args:
        bus: The bus, built with a :class:`Recorder` among its ``listeners``.
        recorder: That recorder; found among the bus's listeners when not given.

    Attributes:
        bus: The bus.
        recorder: The recorder that listens to it.
    """

    async def given(self, *messages: Message) -> AsyncScenario:
        """Handle these messages, in order, to set the scene (as :meth:`Scenario.given`)."""
        __tracebackhide__ = True
        self._before_given()
        bus: Any = self.bus  # handle() is typed for a Command or an Event; these are either
        for message in messages:
            metadata = Metadata.new()
            try:
                await bus.handle(message, metadata=metadata)
            except Exception as error:
                raise self._given_failed(message, error) from error
            self._check_given(message, metadata)
        return self

    async def when(self, message: Message) -> AsyncScenario:
        """Handle the message under test (as :meth:`Scenario.when`)."""
        metadata = self._before_when(message)
        bus: Any = self.bus
        try:
            self._result = await bus.handle(message, metadata=metadata)
        except Exception as error:
            self._error = error
        return self
