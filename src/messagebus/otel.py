"""OpenTelemetry traces and metrics for both buses (the ``otel`` extra).

Turned on in one line, by the middleware of the bus in use::

    from messagebus.otel import async_tracing, tracing

    bus = MessageBus(registry, uow=..., middleware=[tracing()])
    bus = AsyncMessageBus(registry, uow=..., middleware=[async_tracing()])

The tracer and meter come from the global providers the application set up
(``opentelemetry.trace.set_tracer_provider``, ...), or from those given.
Nothing is paid by a bus without it: its middleware chain is empty.

**Spans**, by OpenTelemetry's messaging semantic conventions:

- one span per handler attempt, named ``process {message name}``, with
  ``messaging.system`` = ``messagebus``, ``messaging.operation.type`` and
  ``messaging.operation.name`` = ``process``, ``messaging.destination.name``
  (the message's name), ``messaging.message.id``,
  ``messaging.message.conversation_id`` (its correlation id), and
  ``messagebus.handler``, ``messagebus.message.kind``, ``messagebus.attempt``
  (1, 2, ...) and ``messagebus.outcome`` (``succeeded`` or ``failed``). A
  failed attempt has status ERROR, ``error.type`` (the exception's qualified
  class name) and the exception as an event. Each retry is a span of its own,
  a sibling of the first; an event handler's failure marks its own span only.
- Kinds: INTERNAL for a message handled in the process that made it (a
  command given to ``bus.handle()``, an event raised here); CONSUMER for one
  that came from another process (its metadata carries a trace context and
  nothing here raised it): its span is a child of, and links to, the context
  it was created in.
- Parents: a command's span is a child of the span active when it was given
  to the bus (a web request's, say); an event handler's, of the attempt that
  raised the event. The events an attempt raised are given that attempt's
  context in their :attr:`Metadata.trace_context <messagebus.Metadata.trace_context>`.
- A message routed out of the process is given a ``create {destination}``
  span (PRODUCER) when it is written to the outbox within a trace; its
  context goes with the message (``Metadata.trace_context``, W3C Trace
  Context), so that its handlers in another process continue the trace.
- A relay publishing outbox messages wraps each publication in
  :meth:`Telemetry.sending`: a ``send {destination}`` span (CLIENT) linked to
  the creation context of each message.

**Metrics** (attributes ``messaging.system``, ``messaging.destination.name``
and ``messagebus.handler``):

- ``messagebus.handled``: attempts that succeeded;
- ``messagebus.retried``: attempts that were retries (attempt 2 and later);
- ``messagebus.failed``: handlings given up (told to a :class:`Telemetry`
  given as a listener), with ``error.type``;
- ``messagebus.dead_lettered``: dead letters stored (through
  :meth:`Telemetry.dead_letters`);
- ``messaging.process.duration``: the duration of each attempt, in seconds
  (with ``error.type`` when it failed).

For all four counters, give one :class:`Telemetry` three places::

    telemetry = Telemetry()
    bus = MessageBus(
        registry, uow=..., middleware=[telemetry.middleware], listeners=[telemetry],
        dead_letters=telemetry.dead_letters(store),
    )

``OTEL_SEMCONV_STABILITY_OPT_IN`` is read when a :class:`Telemetry` is made:
this instrumentation has no earlier conventions of its own to keep, so it
emits the current ones by default and with ``messaging``; with
``messaging/dup`` its spans also carry the v1.24 attribute
``messaging.operation`` (``deliver`` and ``create``) for back-ends that still
read it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._context import DELIVERED, METADATA, PARENT, Envelope, metadata_of
from ._outbox import set_creation_hook
from ._version import __version__
from .messages import Message, Metadata, message_name
from .middleware import AsyncMiddleware, AsyncNext, HandlerCall, Middleware, Next
from .observe import Attempt, DeadLetter, DeadLetterStore
from .transport import OutgoingMessage

__all__ = ["Telemetry", "async_tracing", "tracing"]

#: ``messaging.system``: this library is the messaging system of in-process dispatch.
SYSTEM = "messagebus"
_SCOPE = "messagebus"
_W3C = TraceContextTextMapPropagator()


def _opt_in() -> frozenset[str]:
    value = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _error_type(error: object) -> str:
    cls = type(error)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


class Telemetry:
    """The traces and metrics of one or more buses, by OpenTelemetry's conventions.

    Its :attr:`middleware` (for :class:`~messagebus.MessageBus`) or
    :attr:`async_middleware` (for :class:`~messagebus.AsyncMessageBus`) makes
    the spans and the per-attempt metrics; given as a listener too, it counts
    the handlings given up; :meth:`dead_letters` counts the dead letters
    stored. Making one installs the hook that gives messages routed out of
    the process a ``create`` span and its trace context.

    Args:
        tracer_provider: Where spans go; the global provider when None.
        meter_provider: Where metrics go; the global provider when None.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider)
        self._handled = meter.create_counter(
            "messagebus.handled", unit="{attempt}", description="Handler attempts that succeeded"
        )
        self._retried = meter.create_counter(
            "messagebus.retried", unit="{attempt}", description="Handler attempts that were retries"
        )
        self._failed = meter.create_counter(
            "messagebus.failed", unit="{message}", description="Handlings given up"
        )
        self._dead_lettered = meter.create_counter(
            "messagebus.dead_lettered", unit="{message}", description="Dead letters stored"
        )
        self._duration = meter.create_histogram(
            "messaging.process.duration", unit="s", description="Duration of handler attempts"
        )
        self._dup = "messaging/dup" in _opt_in()
        #: Per (handler, message type): the span's name and attributes, the metrics'.
        self._static: dict[tuple[str, type[Message]], tuple[str, dict[str, Any], dict[str, Any]]]
        self._static = {}
        set_creation_hook(self._creation_context)

    def __repr__(self) -> str:
        return f"<Telemetry tracer={self._tracer!r}>"

    # -- spans -----------------------------------------------------------------------

    def _describe(self, call: HandlerCall) -> tuple[str, dict[str, Any], dict[str, Any]]:
        key = (call.handler, type(call.message))
        found = self._static.get(key)
        if found is None:
            name = message_name(key[1])
            span_attributes: dict[str, Any] = {
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": name,
                "messagebus.handler": call.handler,
                "messagebus.message.kind": call.kind,
            }
            if self._dup:
                span_attributes["messaging.operation"] = "deliver"
            metric_attributes = {
                "messaging.system": SYSTEM,
                "messaging.destination.name": name,
                "messagebus.handler": call.handler,
            }
            found = self._static[key] = (f"process {name}", span_attributes, metric_attributes)
        return found

    def _start(self, call: HandlerCall) -> tuple[Any, dict[str, Any]]:
        """The span of one attempt (not yet current), and the attributes of its metrics."""
        name, static, metric_attributes = self._describe(call)
        envelope = call._envelope
        metadata = metadata_of(envelope)
        attributes = dict(static)
        attributes["messaging.message.id"] = str(metadata.message_id)
        attributes["messaging.message.conversation_id"] = str(metadata.correlation_id)
        attributes["messagebus.attempt"] = call.attempt
        kind = SpanKind.INTERNAL
        parent = None
        links: list[Link] = []
        carried = metadata.trace_context
        if carried:
            parent = _W3C.extract(carried)
            parent_span = trace.get_current_span(parent).get_span_context()
            if envelope[PARENT] is None or envelope[PARENT] is DELIVERED:
                # Made in another process: a consumer's span, linked to its creation.
                kind = SpanKind.CONSUMER
                if parent_span.is_valid:
                    links.append(Link(parent_span))
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=kind,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        )
        if call.attempt > 1:
            self._retried.add(1, metric_attributes)
        return span, metric_attributes

    def _succeeded(
        self, span: Any, call: HandlerCall, metric_attributes: dict[str, Any], started: float
    ) -> None:
        span.set_attribute("messagebus.outcome", "succeeded")
        raised: Any = call._events
        if raised:
            self._pass_on(span, raised)
        span.end()
        self._duration.record(time.perf_counter() - started, metric_attributes)
        self._handled.add(1, metric_attributes)

    def _attempt_failed(
        self, span: Any, error: BaseException, metric_attributes: dict[str, Any], started: float
    ) -> None:
        error_type = _error_type(error)
        span.set_attribute("messagebus.outcome", "failed")
        span.set_attribute("error.type", error_type)
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}"))
        span.end()
        self._duration.record(
            time.perf_counter() - started, {**metric_attributes, "error.type": error_type}
        )

    def _pass_on(self, span: Any, raised: list[Envelope]) -> None:
        """Give the events an attempt raised its context: their handlers' spans are its children."""
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, trace.set_span_in_context(span))
        if not carrier:  # a no-op tracer's span has no context to pass on
            return
        for envelope in raised:  # all made by the attempt: none has a context yet
            envelope[METADATA] = attrs.evolve(metadata_of(envelope), trace_context=carrier)

    @property
    def middleware(self) -> Middleware:
        """The middleware of :class:`~messagebus.MessageBus`: a span per handler attempt."""
        start = self._start
        succeeded = self._succeeded
        failed = self._attempt_failed
        clock = time.perf_counter
        use_span = trace.use_span

        def tracing(call: HandlerCall, call_next: Next) -> Any:
            span, metric_attributes = start(call)
            started = clock()
            try:
                with use_span(span, False, record_exception=False, set_status_on_exception=False):
                    result = call_next(call)
            except BaseException as exc:
                failed(span, exc, metric_attributes, started)
                raise
            succeeded(span, call, metric_attributes, started)
            return result

        return tracing

    @property
    def async_middleware(self) -> AsyncMiddleware:
        """The middleware of :class:`~messagebus.AsyncMessageBus`: the same, awaited."""
        start = self._start
        succeeded = self._succeeded
        failed = self._attempt_failed
        clock = time.perf_counter
        use_span = trace.use_span

        async def async_tracing(call: HandlerCall, call_next: AsyncNext) -> Any:
            span, metric_attributes = start(call)
            started = clock()
            try:
                with use_span(span, False, record_exception=False, set_status_on_exception=False):
                    result = await call_next(call)
            except BaseException as exc:
                failed(span, exc, metric_attributes, started)
                raise
            succeeded(span, call, metric_attributes, started)
            return result

        return async_tracing

    def _creation_context(
        self, destination: str, name: str, metadata: Metadata
    ) -> Mapping[str, str] | None:
        """A ``create`` span for a message written to the outbox in a trace; its context."""
        if not trace.get_current_span().get_span_context().is_valid:
            return None
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "create",
            "messaging.operation.name": "create",
            "messaging.destination.name": destination,
            "messaging.message.id": str(metadata.message_id),
            "messaging.message.conversation_id": str(metadata.correlation_id),
            "messagebus.message.name": name,
        }
        if self._dup:
            attributes["messaging.operation"] = "create"
        span = self._tracer.start_span(
            f"create {destination}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, trace.set_span_in_context(span))
        span.end()
        return carrier or None

    @contextlib.contextmanager
    def sending(
        self, destination: str, messages: Sequence[OutgoingMessage], *, system: str = SYSTEM
    ) -> Iterator[Any]:
        """The span of one publication of outbox messages to a broker, for a relay.

        ``send {destination}``, kind CLIENT (each message has its own
        creation context, from its ``create`` span), linked to the creation
        context each message carries in its metadata; ``system`` is the
        broker's name for ``messaging.system`` (``redis``, ``rabbitmq``). An
        exception raised inside marks the span failed, with ``error.type``,
        and goes on. Yields the span.
        """
        links = [
            Link(context, {"messaging.message.id": message.message_id})
            for message in messages
            for context in _creation_context_of(message.metadata)
        ]
        attributes: dict[str, Any] = {
            "messaging.system": system,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": destination,
        }
        if len(messages) == 1:
            attributes["messaging.message.id"] = messages[0].message_id
        else:
            attributes["messaging.batch.message_count"] = len(messages)
        if self._dup:
            attributes["messaging.operation"] = "publish"
        with self._tracer.start_as_current_span(
            f"send {destination}",
            kind=SpanKind.CLIENT,
            links=links,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_attribute("error.type", _error_type(exc))
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))
                raise

    # -- the listener and the dead-letter store ------------------------------------------

    def message_dispatched(self, message: Message, metadata: Metadata) -> None:
        """Nothing: each attempt has its span already."""

    def attempt_finished(self, attempt: Attempt) -> None:
        """Count a handling given up (``messagebus.failed``)."""
        if attempt.outcome != "failed":
            return
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": message_name(attempt.message),
            "messagebus.handler": attempt.handler,
            "error.type": _error_type(attempt.error),
        }
        self._failed.add(1, attributes)

    def dead_letters(self, store: DeadLetterStore) -> DeadLetterStore:
        """``store``, counting the letters it keeps (``messagebus.dead_lettered``).

        What is returned has the store's other methods too, so that the
        ``messagebus dead-letters`` commands work with it as with the store.
        For either bus: a coroutine that ``store.add`` returns is awaited
        before the letter is counted.
        """
        return _counting_class(type(store))(store, self._count_dead_letter)

    def _count_dead_letter(self, letter: DeadLetter) -> None:
        self._dead_lettered.add(
            1,
            {
                "messaging.system": SYSTEM,
                "messaging.destination.name": letter.message_name,
                "messagebus.handler": letter.handler,
            },
        )


def _creation_context_of(metadata_json: str) -> list[trace.SpanContext]:
    """The creation context in an outgoing message's metadata: none, or one that is valid."""
    try:
        metadata = json.loads(metadata_json)
    except ValueError:
        return []
    carried = metadata.get("trace_context") if isinstance(metadata, dict) else None
    if not isinstance(carried, dict):
        return []
    carrier = {k: v for k, v in carried.items() if isinstance(k, str) and isinstance(v, str)}
    context = trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    return [context] if context.is_valid else []


class _CountingStore:
    """A dead-letter store that counts what the store it wraps kept.

    Its class has the public attributes of the wrapped store's class (as
    properties that read them from the store), so that it passes for the same
    kind of store, ``isinstance`` checks of protocols included.
    """

    __slots__ = ("_count", "_store")

    def __init__(self, store: DeadLetterStore, count: Callable[[DeadLetter], None]) -> None:
        self._store = store
        self._count = count

    def __repr__(self) -> str:
        return f"<counted {self._store!r}>"

    def add(self, letter: DeadLetter) -> Awaitable[None] | None:
        kept = self._store.add(letter)
        if kept is None:
            self._count(letter)
            return None
        return self._counted(kept, letter)

    async def _counted(self, kept: Awaitable[None], letter: DeadLetter) -> None:
        await kept
        self._count(letter)


def _counting_class(store_type: type) -> type[_CountingStore]:
    def forward(name: str) -> property:
        return property(lambda self: getattr(self._store, name))

    names = [name for name in dir(store_type) if not name.startswith("_") and name != "add"]
    namespace: dict[str, Any] = {name: forward(name) for name in names}
    if inspect.iscoroutinefunction(getattr(store_type, "add", None)):
        # Its add() returns what the store's does, a coroutine: it waits for nothing else.
        namespace["blocking"] = False
    namespace["__slots__"] = ()
    return type(f"Counted{store_type.__name__}", (_CountingStore,), namespace)


def tracing(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Middleware:
    """The tracing middleware of :class:`~messagebus.MessageBus`, in one call.

    ``MessageBus(registry, middleware=[tracing()])``: spans, and the
    per-attempt metrics (see :class:`Telemetry` for them all).
    """
    return Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider).middleware


def async_tracing(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> AsyncMiddleware:
    """The tracing middleware of :class:`~messagebus.AsyncMessageBus`, in one call."""
    return Telemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    ).async_middleware
