"""Per-dispatch state: the envelope of a message, and a handler attempt's context."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import messages
from .exceptions import DispatchError, NotAMessageError
from .messages import Command, Event, Message, Metadata

# An envelope is a list, not an object: it is made for every message the bus
# dispatches, and a list literal costs a quarter of a class instantiation.
# [MESSAGE, PARENT envelope or None, METADATA or None, SEQUENCE, TIMESTAMP (ns), CLOCK,
#  LOGGED ids]
# A message's id and time are fixed only when first needed (see _stamp), most
# often never: until then SEQUENCE and TIMESTAMP are None. CLOCK is the bus's
# ``clock.time_ns``, read then. LOGGED keeps the ids as text once a log line
# needed them (see log_ids).
Envelope = list[Any]
MESSAGE, PARENT, METADATA, SEQUENCE, TIMESTAMP, CLOCK, LOGGED = range(7)

next_sequence = messages._sequence.__next__


def new_envelope(
    message: Message,
    parent: Envelope | None,
    metadata: Metadata | None,
    time_ns: Callable[[], int],
) -> Envelope:
    """The envelope of a message given to the bus (no parent), or raised while handling one."""
    return [message, parent, metadata, None, None, time_ns, None]


def raised_by(parent: Envelope, events: Sequence[Message]) -> list[Envelope]:
    """The envelopes of the messages raised (or sent) while handling ``parent``: a new list."""
    clock = parent[CLOCK]
    envelopes = []
    for event in events:  # a loop, not a comprehension: a call fewer before Python 3.12
        envelopes.append([event, parent, None, None, None, clock, None])
    return envelopes


#: The parent of a message delivered by a consumer: its handlers claim it in
#: their unit of work's inbox first. A stamped envelope, so nothing reads past it.
DELIVERED: Envelope = [None, None, None, 0, 0, None, None]


def _stamp(envelope: Envelope) -> None:
    """Fix the id and creation time of an envelope, now, once; its parent's first.

    So a cause is never younger than its effects. A handler may hand its
    context to threads of its own, which may ask for the metadata at the same
    time: the first fixes them, the others wait and see the same. The time is
    written first, so that whoever sees the sequence number without the lock
    sees the time too.
    """
    parent = envelope[PARENT]
    if parent is not None and parent[SEQUENCE] is None and parent[METADATA] is None:
        _stamp(parent)
    with _stamping[0]:
        if envelope[SEQUENCE] is None:
            envelope[TIMESTAMP] = envelope[CLOCK]()
            envelope[SEQUENCE] = next_sequence()


# In a list, so that a forked child can have a new lock (one held by another
# thread at the fork would never be released in the child).
_stamping = [threading.Lock()]
if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=lambda: _stamping.__setitem__(0, threading.Lock()))


def metadata_of(envelope: Envelope) -> Metadata:
    """The envelope's metadata, made when first asked for and then kept.

    So a dispatch that nobody looks at makes no UUID and no datetime; its id
    and time were fixed when the envelope was made, or are fixed here when
    first needed (see _stamp).
    """
    metadata: Metadata | None = envelope[METADATA]
    if metadata is None:
        if envelope[SEQUENCE] is None:
            _stamp(envelope)
        message_id = messages._id_from_sequence(envelope[SEQUENCE])
        created_at = messages._utc_from_ns(envelope[TIMESTAMP])
        parent = envelope[PARENT]
        if parent is None:
            metadata = Metadata(message_id, message_id, None, created_at)
        else:
            metadata = metadata_of(parent).caused(message_id, created_at)
        envelope[METADATA] = metadata
    return metadata


def log_ids(envelope: Envelope) -> tuple[str, str, str | None, str]:
    """The message id, correlation id, causation id and creation time, as logged.

    The same values as :func:`metadata_of`'s, as text, made without the
    metadata (no UUID, no datetime) unless it was given, and kept: the lines
    of a message's handlers and retries, and of the events it caused, share them.
    """
    ids: tuple[str, str, str | None, str] | None = envelope[LOGGED]
    if ids is not None:
        return ids
    metadata: Metadata | None = envelope[METADATA]
    if metadata is not None:
        causation = metadata.causation_id
        ids = (
            str(metadata.message_id),
            str(metadata.correlation_id),
            None if causation is None else str(causation),
            metadata.created_at.isoformat(),
        )
    else:
        if envelope[SEQUENCE] is None:
            _stamp(envelope)
        message_id = messages._id_text_from_sequence(envelope[SEQUENCE])
        created_at = messages._iso_from_ns(envelope[TIMESTAMP])
        parent = envelope[PARENT]
        if parent is None:
            ids = (message_id, message_id, None, created_at)
        else:
            parent_id, correlation_id, _, _ = log_ids(parent)
            ids = (message_id, correlation_id, parent_id, created_at)
    envelope[LOGGED] = ids
    return ids


class Context:
    """What a handler attempt may ask for beyond its dependencies.

    A handler gets it by declaring a parameter annotated ``Context``::

        def on_allocated(event: Allocated, context: Context) -> None:
            context.emit(AllocationRecorded(event.orderid))

    Events emitted are dispatched after the attempt succeeds (and its unit of
    work, if any, has committed), after those of its aggregates; those of a
    failed attempt are discarded.
    """

    __slots__ = ("_envelope", "_events", "_sent", "uow")

    # Made for each attempt by new_context().
    _envelope: Envelope
    _events: list[Event]
    _sent: list[Command[Any]] | None
    #: The attempt's unit of work, or None for a handler that runs without one.
    uow: Any

    @property
    def message(self) -> Message:
        """The message being handled."""
        return self._envelope[MESSAGE]  # type: ignore[no-any-return]

    @property
    def metadata(self) -> Metadata:
        """The metadata of the message being handled."""
        return metadata_of(self._envelope)

    def emit(self, event: Event) -> None:
        """Raise an event, dispatched once this attempt has succeeded."""
        if not isinstance(event, Event):
            raise NotAMessageError(event, "Context.emit()")
        self._events.append(event)

    def send(self, command: Command[Any]) -> None:
        """Send a command to the service that owns it, if this attempt commits.

        The command must be routed (``Registry.route``); it is written to the
        outbox in this attempt's unit of work, and a relay publishes it.

        Raises:
            NotAMessageError: ``command`` is not a Command.
            DispatchError: The handler runs without a unit of work, so nothing
                could be sent in its transaction.
        """
        if not isinstance(command, Command):
            raise NotAMessageError(command, "Context.send()")
        if self.uow is None:
            raise DispatchError(
                f"Context.send({type(command).__qualname__}(...)) needs the handler's unit "
                "of work, to send it in the same transaction: register the handler with a "
                "unit of work (not uow=False), on a bus given uow=..."
            )
        if self._sent is None:
            self._sent = []
        self._sent.append(command)


_allocate = object.__new__


def new_context(envelope: Envelope, uow: Any) -> Context:
    """The context of one attempt (a function, quicker to call than a class with ``__init__``)."""
    context: Context = _allocate(Context)
    context._envelope = envelope
    context._events = []
    context._sent = None
    context.uow = uow
    return context
