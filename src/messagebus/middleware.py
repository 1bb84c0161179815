"""Middleware: wrap every handler attempt without touching the dispatch loop.

A middleware is a small callable given what is being handled (a
:class:`HandlerCall`) and the next step; it returns what the next step
returns (the handler's result), and may do something before, after, or
around it::

    def timing(call: HandlerCall, call_next: Next) -> Any:
        started = time.perf_counter()
        try:
            return call_next(call)
        finally:
            histogram.record(time.perf_counter() - started, {"handler": call.handler})

    bus = MessageBus(registry, middleware=[timing])

On :class:`~messagebus.AsyncMessageBus` a middleware is ``async def`` and
awaits the next step::

    async def timing(call: HandlerCall, call_next: AsyncNext) -> Any:
        ...
        return await call_next(call)

The chain wraps each attempt whole: the unit of work is opened, the handler
called, the unit of work committed, all inside ``call_next``; a commit that
fails raises there. Retries are outside the chain: each attempt goes through
it again, with :attr:`HandlerCall.attempt` one higher. A middleware that
raises fails the attempt, as the handler would; after ``call_next`` has
returned, the unit of work has committed, so a retry runs the handler again
on committed data: do after-work that may fail in a try block of its own.

The chain is composed once per handler when the bus is built; a bus with
nothing to wrap calls its handlers without it. The bus's own success log
lines and its listeners are middleware of this kind, outermost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from ._context import MESSAGE, Envelope, metadata_of
from .messages import Message, Metadata

__all__ = ["AsyncMiddleware", "AsyncNext", "HandlerCall", "Middleware", "Next"]


class HandlerCall:
    """What a middleware is given: one handler's handling of one message.

    The same object goes through every attempt of that handling; only
    :attr:`attempt` changes.
    """

    __slots__ = ("_envelope", "_events", "_started", "attempt", "handler", "kind")

    _envelope: Envelope
    _events: Any
    _started: float | None
    #: 1 for the first attempt, 2 for the first retry, ...
    attempt: int
    #: The handler's name (``module.qualname``).
    handler: str
    #: ``"command"`` or ``"event"``.
    kind: Literal["command", "event"]

    @property
    def message(self) -> Message:
        """The message being handled."""
        return self._envelope[MESSAGE]  # type: ignore[no-any-return]

    @property
    def metadata(self) -> Metadata:
        """Its metadata (ids, correlation, creation time)."""
        return metadata_of(self._envelope)

    def __repr__(self) -> str:
        return (
            f"HandlerCall(message={self.message!r}, handler={self.handler!r}, "
            f"attempt={self.attempt})"
        )


_allocate = object.__new__


def new_call(envelope: Envelope, handler: str, kind: Literal["command", "event"]) -> HandlerCall:
    """The call of one handling, at its first attempt."""
    call: HandlerCall = _allocate(HandlerCall)
    call._envelope = envelope
    call._events = ()
    call._started = None
    call.attempt = 1
    call.handler = handler
    call.kind = kind
    return call


#: The next step of a sync chain: the rest of the chain, then the attempt.
Next = Callable[[HandlerCall], Any]
#: A middleware of :class:`~messagebus.MessageBus`.
Middleware = Callable[[HandlerCall, Next], Any]
#: The next step of an async chain.
AsyncNext = Callable[[HandlerCall], Awaitable[Any]]
#: A middleware of :class:`~messagebus.AsyncMessageBus`.
AsyncMiddleware = Callable[[HandlerCall, AsyncNext], Awaitable[Any]]
