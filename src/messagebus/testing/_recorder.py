"""A listener that records what a bus does, queried by the asserts of a test."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

import attrs

from messagebus._registry import handler_name
from messagebus.messages import Event, Message, Metadata
from messagebus.observe import Attempt

from ._diff import plural

__all__ = ["Dispatch", "Recorder"]

M = TypeVar("M", bound=Message)

#: A handler, named as the bus names it (``module.qualname``), by the end of
#: that name (``"send_email"``, ``"handlers.send_email"``), or the function itself.
HandlerRef = str | Callable[..., Any]
#: A message type, or a tuple of them, as ``isinstance`` takes them.
TypeFilter = type[Message] | tuple[type[Message], ...] | None


@attrs.frozen
class Dispatch:
    """One message the bus dispatched, as a :class:`Recorder` saw it.

    Attributes:
        message: The message (a command or an event).
        metadata: Its metadata: its id, correlation id, causation id (the id
            of the message whose handling raised it; None for a message given
            to ``bus.handle()``) and creation time.
    """

    message: Message
    metadata: Metadata

    @property
    def raised(self) -> bool:
        """Whether a handler raised it (rather than a caller giving it to the bus)."""
        return self.metadata.causation_id is not None


def _matches_handler(name: str, handler: HandlerRef | None) -> bool:
    if handler is None:
        return True
    if isinstance(handler, str):
        return name == handler or name.endswith("." + handler)
    return name == handler_name(handler)


def _matches_type(message: Message, message_type: TypeFilter) -> bool:
    return message_type is None or isinstance(message, message_type)


class Recorder:
    """Records what a bus dispatched and how every handler attempt ended.

    A :class:`~messagebus.observe.Listener`: give it to the bus when the bus
    is built, then ask it what happened::

        recorder = Recorder()
        bus = MessageBus(registry, uow=..., listeners=[recorder])
        bus.handle(Allocate("o1", "LAMP", 10))

        assert recorder.handled(Allocate) == [Allocate("o1", "LAMP", 10)]
        assert recorder.raised == [Allocated("o1", "LAMP", 10, "b1")]
        assert recorder.failed() == []

    It works with :class:`~messagebus.MessageBus` and
    :class:`~messagebus.AsyncMessageBus` alike. It is thread-safe: one
    recorder can listen to a bus that many threads (or tasks) use at once,
    and every query returns a new list, a snapshot of what was recorded.
    Everything is kept until :meth:`clear`; :meth:`correlated` picks out what
    followed from one message.

    Where a query takes a ``handler``, give the function itself, its full
    name as the bus logs it (``module.qualname``), or the end of that name
    (``"send_email"``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dispatches: list[Dispatch] = []
        self._attempts: list[Attempt] = []

    # -- the Listener protocol -----------------------------------------------

    def message_dispatched(self, message: Message, metadata: Metadata) -> None:
        """Record a message that the bus is about to handle."""
        dispatch = Dispatch(message, metadata)
        with self._lock:
            self._dispatches.append(dispatch)

    def attempt_finished(self, attempt: Attempt) -> None:
        """Record how a handler attempt ended."""
        with self._lock:
            self._attempts.append(attempt)

    # -- what was recorded ---------------------------------------------------

    @property
    def dispatches(self) -> list[Dispatch]:
        """Every message dispatched, with its metadata, in the order the bus dispatched them."""
        with self._lock:
            return list(self._dispatches)

    @property
    def attempts(self) -> list[Attempt]:
        """Every handler attempt, in the order they finished."""
        with self._lock:
            return list(self._attempts)

    @overload
    def dispatched(self, message_type: type[M]) -> list[M]: ...

    @overload
    def dispatched(
        self, message_type: tuple[type[Message], ...] | None = None
    ) -> list[Message]: ...

    def dispatched(self, message_type: TypeFilter = None) -> list[Any]:
        """The messages dispatched (of a type, or of any), given and raised alike, in order."""
        return [d.message for d in self.dispatches if _matches_type(d.message, message_type)]

    @property
    def raised(self) -> list[Event]:
        """The events that handlers raised, in the order they were dispatched.

        Events given to ``bus.handle()`` are not in it; events raised while
        handling them are. Ask :meth:`cause_of` (or :attr:`dispatches`) what
        raised each one.
        """
        return [d.message for d in self.dispatches if d.raised and isinstance(d.message, Event)]

    @overload
    def handled(self, message_type: type[M], *, handler: HandlerRef | None = None) -> list[M]: ...

    @overload
    def handled(
        self,
        message_type: tuple[type[Message], ...] | None = None,
        *,
        handler: HandlerRef | None = None,
    ) -> list[Message]: ...

    def handled(self, message_type: TypeFilter = None, *, handler: HandlerRef | None = None) -> Any:
        """The messages that a handler handled successfully, each once, in order.

        Args:
            message_type: Only messages of this type (or types).
            handler: Only messages that this handler handled successfully.
        """
        seen: set[uuid.UUID] = set()
        handled: list[Message] = []
        for attempt in self._attempts_where("succeeded", message_type, handler):
            if attempt.metadata.message_id not in seen:
                seen.add(attempt.metadata.message_id)
                handled.append(attempt.message)
        return handled

    def failed(
        self, message_type: TypeFilter = None, *, handler: HandlerRef | None = None
    ) -> list[Attempt]:
        """The handlings that the bus gave up on: the last attempt of each, with its error.

        For a command, the error reached the caller; for an event, it was
        logged (and stored as a dead letter, where a store is configured).
        Each :class:`~messagebus.observe.Attempt` says which ``handler``
        failed, on which ``message``, with which ``error``, after how many
        attempts (``attempt``).
        """
        return self._attempts_where("failed", message_type, handler)

    def retried(
        self, message_type: TypeFilter = None, *, handler: HandlerRef | None = None
    ) -> list[Attempt]:
        """The attempts that failed and were tried again, each with its error."""
        return self._attempts_where("retrying", message_type, handler)

    def succeeded(
        self, message_type: TypeFilter = None, *, handler: HandlerRef | None = None
    ) -> list[Attempt]:
        """The attempts that succeeded (one per handler and message)."""
        return self._attempts_where("succeeded", message_type, handler)

    def _attempts_where(
        self, outcome: str, message_type: TypeFilter, handler: HandlerRef | None
    ) -> list[Attempt]:
        return [
            attempt
            for attempt in self.attempts
            if attempt.outcome == outcome
            and _matches_type(attempt.message, message_type)
            and _matches_handler(attempt.handler, handler)
        ]

    # -- causation -----------------------------------------------------------

    def caused_by(
        self, message: Message | Metadata | uuid.UUID, *, transitively: bool = False
    ) -> list[Message]:
        """The messages raised while handling ``message``, in dispatch order.

        Args:
            message: A message that was dispatched: the object given to or
                raised by the bus, or an equal one (then every dispatch of an
                equal message counts); or its metadata, or its message id.
            transitively: Also what those raised, and so on, breadth first.

        Raises:
            LookupError: The recorder saw no dispatch of that message.
        """
        dispatches = self.dispatches
        causes = self._ids_of(message, dispatches)
        found: list[Message] = []
        while causes:
            children = [d for d in dispatches if d.metadata.causation_id in causes]
            found.extend(d.message for d in children)
            causes = {d.metadata.message_id for d in children} if transitively else set()
        return found

    def cause_of(self, message: Message | Metadata | uuid.UUID) -> Message | None:
        """The message whose handling raised this one; None for one given to the bus.

        Raises:
            LookupError: The recorder saw no dispatch of that message (or of its cause).
        """
        dispatches = self.dispatches
        metadata = self.metadata_of(message)
        if metadata.causation_id is None:
            return None
        for dispatch in dispatches:
            if dispatch.metadata.message_id == metadata.causation_id:
                return dispatch.message
        raise LookupError(f"the recorder saw no dispatch of the message that raised {message!r}")

    def metadata_of(self, message: Message | Metadata | uuid.UUID) -> Metadata:
        """The metadata of a dispatched message (the first, if it was dispatched twice).

        Raises:
            LookupError: The recorder saw no dispatch of that message.
        """
        dispatches = self.dispatches
        ids = self._ids_of(message, dispatches)
        return next(d.metadata for d in dispatches if d.metadata.message_id in ids)

    @staticmethod
    def _ids_of(
        message: Message | Metadata | uuid.UUID, dispatches: list[Dispatch]
    ) -> set[uuid.UUID]:
        if isinstance(message, Metadata):
            wanted: set[uuid.UUID] = {message.message_id}
        elif isinstance(message, uuid.UUID):
            wanted = {message}
        else:
            same = {d.metadata.message_id for d in dispatches if d.message is message}
            wanted = same or {d.metadata.message_id for d in dispatches if d.message == message}
        ids = wanted & {d.metadata.message_id for d in dispatches}
        if not ids:
            raise LookupError(f"the recorder saw no dispatch of {message!r}")
        return ids

    def correlated(self, correlation_id: uuid.UUID | Message) -> Recorder:
        """A new recorder holding only what shares a correlation id: one message
        given to the bus and everything that followed from it.

        Args:
            correlation_id: The correlation id, or a message that was dispatched
                (its correlation id is used).
        """
        if isinstance(correlation_id, Message):
            correlation_id = self.metadata_of(correlation_id).correlation_id
        with self._lock:
            dispatches = [
                d for d in self._dispatches if d.metadata.correlation_id == correlation_id
            ]
            attempts = [a for a in self._attempts if a.metadata.correlation_id == correlation_id]
        recorder = Recorder()
        recorder._dispatches = dispatches
        recorder._attempts = attempts
        return recorder

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._dispatches.clear()
            self._attempts.clear()

    # -- showing it ----------------------------------------------------------

    def tree(self) -> str:
        """What happened, as text: each message under the one that raised it,
        with the handlers that were retried or gave up on it.

        For example::

            Allocate(orderid='o1', sku='LAMP', qty=10)
              Allocated(orderid='o1', sku='LAMP', qty=10, batchref='b1')
                ! shop.handlers.publish gave up after 3 attempts: ConnectionError: refused
        """
        with self._lock:
            dispatches = list(self._dispatches)
            attempts = list(self._attempts)
        if not dispatches:
            return "(nothing was dispatched)"
        known = {d.metadata.message_id for d in dispatches}
        children: dict[uuid.UUID | None, list[Dispatch]] = {}
        for dispatch in dispatches:
            cause = dispatch.metadata.causation_id
            children.setdefault(cause if cause in known else None, []).append(dispatch)
        lines: list[str] = []

        def show(dispatch: Dispatch, depth: int) -> None:
            pad = "  " * depth
            lines.append(pad + repr(dispatch.message))
            for attempt in attempts:
                if attempt.metadata.message_id != dispatch.metadata.message_id:
                    continue
                if attempt.outcome == "failed":
                    lines.append(
                        f"{pad}  ! {attempt.handler} gave up after "
                        f"{plural(attempt.attempt, 'attempt')}: {_error(attempt.error)}"
                    )
                elif attempt.outcome == "retrying":
                    lines.append(
                        f"{pad}  ~ {attempt.handler} attempt {attempt.attempt} failed "
                        f"and was retried: {_error(attempt.error)}"
                    )
            for child in children.get(dispatch.metadata.message_id, ()):
                show(child, depth + 1)

        for root in children.get(None, ()):
            show(root, 0)
        return "\n".join(lines)

    def __repr__(self) -> str:
        with self._lock:
            counts = (len(self._dispatches), len(self._attempts))
        return f"<Recorder: {plural(counts[0], 'message')}, {plural(counts[1], 'attempt')}>"


def _error(error: BaseException | None) -> str:
    return "?" if error is None else f"{type(error).__qualname__}: {error}"


def recorders_of(listeners: Iterable[object]) -> list[Recorder]:
    """The recorders among a bus's listeners."""
    return [listener for listener in listeners if isinstance(listener, Recorder)]
