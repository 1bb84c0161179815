"""messagebus.otel: spans and metrics by OpenTelemetry's conventions, on both buses.

With the real SDK and its in-memory exporters; each test has providers of its
own (the global ones are left alone).
"""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import tenacity
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from messagebus import (
    AsyncMessageBus,
    Command,
    Context,
    Event,
    MessageBus,
    Metadata,
    Registry,
    RetryPolicy,
    Transient,
)
from messagebus._outbox import set_creation_hook
from messagebus.observe import InMemoryDeadLetters
from messagebus.otel import Telemetry, async_tracing, tracing
from messagebus.testing import FakeAsyncUnitOfWork, FakeUnitOfWork

KINDS = ["sync", "async"]


@attrs.frozen
class PlaceOrder(Command[str]):
    orderid: str


@attrs.frozen
class OrderPlaced(Event):
    orderid: str


@attrs.frozen
class PaymentRequested(Event):
    orderid: str


@attrs.frozen
class ChargeCard(Command[None]):
    orderid: str


class Flaky(Transient):
    """A transient failure (retried by the default policy)."""


class _WithOutbox:
    """A fake unit of work that keeps what it was given to send."""

    outgoing: list[Any]

    def stage_outgoing(self, messages: Any) -> None:
        self.outgoing = [*getattr(self, "outgoing", []), *messages]


class OutboxUnitOfWork(_WithOutbox, FakeUnitOfWork):
    pass


class AsyncOutboxUnitOfWork(_WithOutbox, FakeAsyncUnitOfWork):
    pass


class Telemetered:
    """Providers with in-memory exporters, and a bus of either kind traced by them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])
        self.telemetry = Telemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )
        self.letters = InMemoryDeadLetters()
        self.registry = Registry()

    def register(self, handler: Callable[..., Any], **options: Any) -> None:
        if self.kind == "async":
            plain = handler

            @functools.wraps(plain)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return plain(*args, **kwargs)

            handler = wrapper
        self.registry.register(handler, **options)

    def bus(self, **options: Any) -> Any:
        common: dict[str, Any] = {
            "listeners": [self.telemetry],
            "dead_letters": self.telemetry.dead_letters(self.letters),
            "retry": RetryPolicy(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_none()),
            "dead_letter_commands": True,
            **options,
        }
        if self.kind == "async":

            async def no_sleep(seconds: float) -> None:
                return None

            return AsyncMessageBus(
                self.registry,
                **{
                    "middleware": [self.telemetry.async_middleware],
                    "sleep": no_sleep,
                    "uow": FakeAsyncUnitOfWork,
                    **common,
                },
            )
        return MessageBus(
            self.registry,
            **{
                "middleware": [self.telemetry.middleware],
                "sleep": lambda seconds: None,
                "uow": FakeUnitOfWork,
                **common,
            },
        )

    def handle(self, bus: Any, message: Any, **options: Any) -> Any:
        if self.kind == "async":
            return asyncio.run(bus.handle(message, **options))
        return bus.handle(message, **options)

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def counters(self) -> dict[tuple[str, str], int]:
        """Each counter's value by (metric name, handler), summed over other attributes."""
        totals: dict[tuple[str, str], int] = {}
        data = self.metrics.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        if metric.name == "messaging.process.duration":
                            continue
                        key = (metric.name, str(point.attributes["messagebus.handler"]))
                        totals[key] = totals.get(key, 0) + int(point.value)
        return totals

    def histogram_counts(self, name: str) -> int:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return sum(
            point.count
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        )


@pytest.fixture(params=KINDS)
def t(request: pytest.FixtureRequest) -> Any:
    telemetered = Telemetered(request.param)
    yield telemetered
    set_creation_hook(None)


def _order_flow(t: Telemetered) -> dict[str, int]:
    """A command that raises two events: one handler retried once, one given up."""
    calls = {"ship": 0, "pay": 0}

    def place_order(command: PlaceOrder, context: Context) -> str:
        context.emit(OrderPlaced(command.orderid))
        context.emit(PaymentRequested(command.orderid))
        return command.orderid

    def ship(event: OrderPlaced) -> None:
        calls["ship"] += 1
        if calls["ship"] == 1:
            raise Flaky("the warehouse is busy")

    def pay(event: PaymentRequested) -> None:
        calls["pay"] += 1
        raise Flaky("the bank is down")

    t.register(place_order)
    t.register(ship)
    t.register(pay)
    return calls


def _by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        if "messagebus.handler" not in (span.attributes or {}):
            continue
        named.setdefault(str(span.attributes["messagebus.handler"]).rsplit(".", 1)[-1], []).append(
            span
        )
    return named


def test_a_command_and_its_events_make_one_span_tree(t: Telemetered) -> None:
    _order_flow(t)
    bus = t.bus()
    tracer = t.tracer_provider.get_tracer("the web app")

    with tracer.start_as_current_span("POST /orders") as request:
        assert "o1" == t.handle(bus, PlaceOrder("o1"))

    spans = _by_name([s for s in t.finished() if s.name != "POST /orders"])
    (command,) = spans["place_order"]
    assert request.get_span_context().span_id == command.parent.span_id
    trace_id = request.get_span_context().trace_id
    every = [span for group in spans.values() for span in group]
    assert {trace_id} == {span.context.trace_id for span in every}
    # An event handler's spans are children of the attempt that raised the event.
    assert {command.context.span_id} == {
        span.parent.span_id for span in spans["ship"] + spans["pay"]
    }


def test_retries_are_sibling_spans_with_their_attempt_and_outcome(t: Telemetered) -> None:
    _order_flow(t)
    t.handle(t.bus(), PlaceOrder("o1"))

    spans = _by_name(t.finished())
    ship = [
        (s.attributes["messagebus.attempt"], s.attributes["messagebus.outcome"])
        for s in spans["ship"]
    ]
    pay = [
        (s.attributes["messagebus.attempt"], s.attributes["messagebus.outcome"])
        for s in spans["pay"]
    ]
    assert [(1, "failed"), (2, "succeeded")] == ship
    assert [(1, "failed"), (2, "failed")] == pay


def test_an_event_handlers_failure_marks_its_own_span_only(t: Telemetered) -> None:
    _order_flow(t)
    t.handle(t.bus(), PlaceOrder("o1"))

    spans = _by_name(t.finished())
    statuses = {name: [span.status.status_code for span in group] for name, group in spans.items()}
    assert {
        "place_order": [StatusCode.UNSET],
        "ship": [StatusCode.ERROR, StatusCode.UNSET],
        "pay": [StatusCode.ERROR, StatusCode.ERROR],
    } == statuses
    failed = spans["pay"][-1]
    assert f"{__name__}.Flaky" == failed.attributes["error.type"]
    assert ["exception"] == [event.name for event in failed.events]
    assert "error.type" not in spans["ship"][-1].attributes


def test_spans_are_named_and_attributed_by_the_messaging_conventions(t: Telemetered) -> None:
    _order_flow(t)
    metadata = Metadata.new()
    t.handle(t.bus(), PlaceOrder("o1"), metadata=metadata)

    (command,) = _by_name(t.finished())["place_order"]
    assert "process PlaceOrder" == command.name
    assert SpanKind.INTERNAL == command.kind
    assert {
        "messaging.system": "messagebus",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "PlaceOrder",
        "messaging.message.id": str(metadata.message_id),
        "messaging.message.conversation_id": str(metadata.correlation_id),
        "messagebus.handler": f"{__name__}._order_flow.<locals>.place_order",
        "messagebus.message.kind": "command",
        "messagebus.attempt": 1,
        "messagebus.outcome": "succeeded",
    } == dict(command.attributes or {})
    (first_ship, _) = _by_name(t.finished())["ship"]
    assert "process OrderPlaced" == first_ship.name
    assert (
        str(metadata.correlation_id) == first_ship.attributes["messaging.message.conversation_id"]
    )
    assert "event" == first_ship.attributes["messagebus.message.kind"]


def test_the_counters_count_by_handler(t: Telemetered) -> None:
    _order_flow(t)
    t.handle(t.bus(), PlaceOrder("o1"))

    handler = f"{__name__}._order_flow.<locals>.%s"
    assert {
        ("messagebus.handled", handler % "place_order"): 1,
        ("messagebus.handled", handler % "ship"): 1,
        ("messagebus.retried", handler % "ship"): 1,
        ("messagebus.retried", handler % "pay"): 1,
        ("messagebus.failed", handler % "pay"): 1,
        ("messagebus.dead_lettered", handler % "pay"): 1,
    } == t.counters()
    assert 5 == t.histogram_counts("messaging.process.duration")
    assert 1 == len(t.letters.letters)


def test_a_message_from_another_process_continues_its_trace_as_a_consumer(
    t: Telemetered,
) -> None:
    _order_flow(t)
    bus = t.bus()
    producer = t.tracer_provider.get_tracer("another service")
    with producer.start_as_current_span("create orders", kind=SpanKind.PRODUCER) as created:
        carrier: dict[str, str] = {}
        from opentelemetry.propagate import inject

        inject(carrier)
    delivered = attrs.evolve(Metadata.new(), trace_context=carrier)

    t.handle(bus, PlaceOrder("o1"), metadata=delivered)

    (command,) = _by_name(t.finished())["place_order"]
    assert SpanKind.CONSUMER == command.kind
    assert created.get_span_context().trace_id == command.context.trace_id
    assert created.get_span_context().span_id == command.parent.span_id
    assert [created.get_span_context().span_id] == [link.context.span_id for link in command.links]


def test_a_message_routed_out_gets_a_create_span_and_carries_its_context(t: Telemetered) -> None:
    def place_order(command: PlaceOrder, context: Context) -> str:
        context.emit(OrderPlaced(command.orderid))
        return command.orderid

    t.register(place_order)
    t.registry.route(OrderPlaced, to="orders.events")
    uows: list[Any] = []
    factory = AsyncOutboxUnitOfWork if t.kind == "async" else OutboxUnitOfWork

    def uow() -> Any:
        uows.append(factory())
        return uows[-1]

    bus = t.bus(uow=uow)
    tracer = t.tracer_provider.get_tracer("the web app")
    with tracer.start_as_current_span("POST /orders"):
        t.handle(bus, PlaceOrder("o1"))

    (created,) = [s for s in t.finished() if s.kind == SpanKind.PRODUCER]
    (command,) = _by_name([s for s in t.finished() if "messagebus.handler" in s.attributes])[
        "place_order"
    ]
    assert "create orders.events" == created.name
    assert command.context.span_id == created.parent.span_id
    assert "create" == created.attributes["messaging.operation.type"]
    (outgoing,) = [message for unit in uows for message in getattr(unit, "outgoing", [])]
    carried = json.loads(outgoing.metadata)["trace_context"]
    span_id = f"{created.context.span_id:016x}"
    assert span_id == carried["traceparent"].split("-")[2]


def test_a_command_sent_outside_a_trace_carries_no_context(t: Telemetered) -> None:
    t.registry.route(ChargeCard, to="payments.commands")
    uows: list[Any] = []
    factory = AsyncOutboxUnitOfWork if t.kind == "async" else OutboxUnitOfWork

    def uow() -> Any:
        uows.append(factory())
        return uows[-1]

    bus = t.bus(uow=uow)
    send = (lambda c: asyncio.run(bus.send(c))) if t.kind == "async" else bus.send
    send(ChargeCard("o1"))
    with t.tracer_provider.get_tracer("the web app").start_as_current_span("POST /charges"):
        send(ChargeCard("o2"))

    first, second = [json.loads(message.metadata) for unit in uows for message in unit.outgoing]
    assert "trace_context" not in first
    assert ["traceparent"] == list(second["trace_context"])
    assert ["create payments.commands", "POST /charges"] == [s.name for s in t.finished()]


def test_the_one_line_helpers_give_each_bus_its_kind_of_middleware() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = Registry()

    def place_order(command: PlaceOrder) -> str:
        return command.orderid

    async def place_order_async(command: PlaceOrder) -> str:
        return command.orderid

    registry.register(place_order)
    async_registry = Registry()
    async_registry.register(place_order_async)
    try:
        MessageBus(registry, middleware=[tracing(tracer_provider=provider)]).handle(
            PlaceOrder("o1")
        )
        asyncio.run(
            AsyncMessageBus(
                async_registry, middleware=[async_tracing(tracer_provider=provider)]
            ).handle(PlaceOrder("o2"))
        )
    finally:
        set_creation_hook(None)

    assert ["process PlaceOrder"] * 2 == [span.name for span in exporter.get_finished_spans()]


def test_the_stability_opt_in_adds_the_older_attribute_when_asked_for_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http, messaging/dup")
    t = Telemetered("sync")
    t.registry.route(ChargeCard, to="payments.commands")
    t.register(_plain_place_order)
    try:
        bus = t.bus(uow=OutboxUnitOfWork)
        t.handle(bus, PlaceOrder("o1"))
        with t.tracer_provider.get_tracer("the web app").start_as_current_span("POST /charges"):
            bus.send(ChargeCard("o1"))
        with t.telemetry.sending("payments.commands", []):
            pass
    finally:
        set_creation_hook(None)

    process, create, _, sent = t.finished()
    assert "publish" == sent.attributes["messaging.operation"]
    assert ("deliver", "process") == (
        process.attributes["messaging.operation"],
        process.attributes["messaging.operation.type"],
    )
    assert ("create", "create") == (
        create.attributes["messaging.operation"],
        create.attributes["messaging.operation.type"],
    )


@pytest.mark.parametrize("value", ["", "messaging", "http"])
def test_without_dup_only_the_current_conventions_are_emitted(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", value)
    t = Telemetered("sync")
    t.register(_plain_place_order)
    try:
        t.handle(t.bus(), PlaceOrder("o1"))
    finally:
        set_creation_hook(None)

    (span,) = t.finished()
    assert "messaging.operation" not in span.attributes


def _plain_place_order(command: PlaceOrder) -> str:
    return command.orderid


def test_an_unsampled_trace_stays_unsampled_in_the_events_it_raises() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    t = Telemetered("sync")
    t.telemetry = Telemetry(
        tracer_provider=TracerProvider(sampler=ALWAYS_OFF), meter_provider=t.meter_provider
    )
    seen: list[Metadata] = []

    def place_order(command: PlaceOrder, context: Context) -> str:
        context.emit(OrderPlaced(command.orderid))
        return command.orderid

    def ship(event: OrderPlaced, metadata: Metadata) -> None:
        seen.append(metadata)

    t.register(place_order)
    t.register(ship)
    try:
        t.handle(t.bus(), PlaceOrder("o1"))
    finally:
        set_creation_hook(None)

    (metadata,) = seen
    assert metadata.trace_context is not None
    flags = int(metadata.trace_context["traceparent"].rsplit("-", 1)[1], 16)
    assert 0 == flags & 1  # not sampled
    assert [] == t.finished()


def test_importing_messagebus_loads_no_opentelemetry() -> None:
    script = (
        "import sys, messagebus, messagebus.testing, messagebus.cli;"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "[]" == result.stdout.strip()


def test_a_counted_store_is_still_the_kind_of_store_it_wraps() -> None:
    from messagebus.dead_letters import InMemoryDeadLetterStore, ManagedDeadLetterStore

    store = InMemoryDeadLetterStore()
    t = Telemetered("sync")
    try:
        counted = t.telemetry.dead_letters(store)
    finally:
        set_creation_hook(None)

    assert isinstance(counted, ManagedDeadLetterStore)
    assert store.list == counted.list  # type: ignore[attr-defined]


def test_a_store_whose_add_is_awaited_is_counted_once_it_has_kept_the_letter() -> None:
    kept: list[Any] = []

    class AsyncStore:
        async def add(self, letter: Any) -> None:
            kept.append(letter)

    t = Telemetered("async")
    t.letters = AsyncStore()  # type: ignore[assignment]

    def pay(event: PaymentRequested) -> None:
        raise Flaky("the bank is down")

    t.register(pay)
    try:
        t.handle(t.bus(), PaymentRequested("o1"))
    finally:
        set_creation_hook(None)

    assert 1 == len(kept)
    assert 1 == t.counters()[("messagebus.dead_lettered", f"{__name__}.{pay.__qualname__}")]


def test_a_trace_context_survives_the_serializer() -> None:
    from messagebus import Serializer

    serializer = Serializer([PlaceOrder])
    metadata = attrs.evolve(Metadata.new(), trace_context={"traceparent": "00-" + "1" * 32})

    dumped = serializer.dump(PlaceOrder("o1"), metadata)
    _, loaded = serializer.load_with_metadata(json.loads(json.dumps(dumped)))

    assert metadata == loaded
    assert "trace_context" not in serializer.dump_metadata(Metadata.new())


@pytest.mark.parametrize(
    ("trace_context", "error"),
    [
        ({"traceparent": 5}, "expected a str, got int 5"),
        ({str(n): "x" for n in range(17)}, "trace_context has 17 entries; at most 16 are kept"),
        ({"traceparent": "x" * 9000}, "trace_context entry 'traceparent' is too long"),
    ],
)
def test_a_bad_trace_context_from_outside_is_refused_and_named(
    trace_context: Any, error: str
) -> None:
    from messagebus import InvalidMessageDataError, Serializer

    serializer = Serializer([PlaceOrder])
    data = serializer.dump(PlaceOrder("o1"), Metadata.new())
    data["metadata"]["trace_context"] = trace_context

    with pytest.raises(InvalidMessageDataError) as raised:
        serializer.load_with_metadata(data)

    assert error in str(raised.value)


def test_metadata_refuses_a_trace_context_that_is_not_text() -> None:
    with pytest.raises(TypeError, match="trace_context must map str to str"):
        attrs.evolve(Metadata.new(), trace_context={"traceparent": b"00-"})
    with pytest.raises(TypeError, match="trace_context must be a mapping of str to str"):
        attrs.evolve(Metadata.new(), trace_context=["traceparent"])


def test_a_malformed_trace_context_from_outside_starts_a_trace_of_its_own(
    t: Telemetered,
) -> None:
    t.register(_plain_place_order)
    metadata = attrs.evolve(Metadata.new(), trace_context={"traceparent": "not a traceparent"})

    t.handle(t.bus(), PlaceOrder("o1"), metadata=metadata)

    (span,) = t.finished()
    assert (None, ()) == (span.parent, tuple(span.links))


def test_a_context_the_application_gave_is_sent_as_it_is(t: Telemetered) -> None:
    t.registry.route(ChargeCard, to="payments.commands")
    uows: list[Any] = []
    factory = AsyncOutboxUnitOfWork if t.kind == "async" else OutboxUnitOfWork

    def uow() -> Any:
        uows.append(factory())
        return uows[-1]

    bus = t.bus(uow=uow)
    given = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    metadata = attrs.evolve(Metadata.new(), trace_context=given)
    with t.tracer_provider.get_tracer("the web app").start_as_current_span("POST /charges"):
        sent = bus.send(ChargeCard("o1"), metadata=metadata)
        if t.kind == "async":
            asyncio.run(sent)

    (outgoing,) = [message for unit in uows for message in unit.outgoing]
    assert given == json.loads(outgoing.metadata)["trace_context"]
    assert ["POST /charges"] == [span.name for span in t.finished()]


def test_with_a_tracer_that_records_nothing_events_carry_no_context() -> None:
    t = Telemetered("sync")
    t.telemetry = Telemetry(
        tracer_provider=trace.NoOpTracerProvider(), meter_provider=t.meter_provider
    )
    seen: list[Metadata] = []

    def place_order(command: PlaceOrder, context: Context) -> str:
        context.emit(OrderPlaced(command.orderid))
        return command.orderid

    def ship(event: OrderPlaced, metadata: Metadata) -> None:
        seen.append(metadata)

    t.register(place_order)
    t.register(ship)
    try:
        t.handle(t.bus(), PlaceOrder("o1"))
    finally:
        set_creation_hook(None)

    assert [None] == [metadata.trace_context for metadata in seen]
    assert "<Telemetry tracer=" in repr(t.telemetry)
    assert repr(t.letters) in repr(t.telemetry.dead_letters(t.letters))


def _outgoing(message_id: str, trace_context: dict[str, str] | None) -> Any:
    from messagebus.transport import OutgoingMessage

    metadata: dict[str, Any] = {"message_id": message_id}
    if trace_context is not None:
        metadata["trace_context"] = trace_context
    return OutgoingMessage(message_id, "OrderPlaced", 1, "{}", json.dumps(metadata), "orders", "k")


def test_a_relays_send_span_links_to_each_messages_creation_context(t: Telemetered) -> None:
    tracer = t.tracer_provider.get_tracer("the web app")
    carriers = []
    for name in ("create orders 1", "create orders 2"):
        with tracer.start_as_current_span(name):
            carrier: dict[str, str] = {}
            from opentelemetry.propagate import inject

            inject(carrier)
            carriers.append(carrier)
    messages = [
        _outgoing("m1", carriers[0]),
        _outgoing("m2", carriers[1]),
        _outgoing("m3", None),
        _outgoing("m4", {"traceparent": "garbage"}),
        attrs.evolve(_outgoing("m5", None), metadata="not json"),
    ]

    with t.telemetry.sending("orders", messages, system="redis"):
        pass

    *created, sent = t.finished()
    assert ("send orders", SpanKind.CLIENT) == (sent.name, sent.kind)
    assert [c.context.span_id for c in created] == [link.context.span_id for link in sent.links]
    assert ["m1", "m2"] == [link.attributes["messaging.message.id"] for link in sent.links]
    assert {
        "messaging.system": "redis",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "orders",
        "messaging.batch.message_count": 5,
    } == dict(sent.attributes or {})


def test_a_failed_publication_marks_its_send_span(t: Telemetered) -> None:
    with pytest.raises(ConnectionError), t.telemetry.sending("orders", [_outgoing("m1", None)]):
        raise ConnectionError("the broker went away")

    (sent,) = t.finished()
    assert (StatusCode.ERROR, "ConnectionError", "m1") == (
        sent.status.status_code,
        sent.attributes["error.type"],
        sent.attributes["messaging.message.id"],
    )
