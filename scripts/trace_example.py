"""One trace of the allocation example, sent to a trace viewer over OTLP/HTTP.

    python scripts/trace_example.py http://127.0.0.1:6006   # prints the trace id

It needs ``opentelemetry-exporter-otlp-proto-http`` beside the ``otel`` and
``sqlalchemy`` extras. The screenshot in docs/how-to/observability.md was
taken with it: arize-phoenix (``phoenix serve``) as the viewer, then
``chromium-headless-shell --screenshot --window-size=1600,1000
--virtual-time-budget=20000 http://127.0.0.1:6006/projects/UHJvamVjdDox/traces/TRACE_ID
?selectedSpanNodeId=...`` (the failed span's id, from Phoenix's GraphQL API).

A request changes a batch's quantity (its order lines are reallocated) and
allocates an order that runs out of stock; the out-of-stock e-mail fails
once, and is retried.
"""

import sys
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from messagebus import MessageBus, RetryPolicy, retry_if_transient
from messagebus.otel import tracing
from messagebus.testing import FakeUnitOfWork, InMemoryRepository

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "allocation"))

# The example is not installed: its folder is put on the path above.
from allocation.domain import commands
from allocation.service_layer import handlers

provider = TracerProvider(resource=Resource.create({"service.name": "allocation"}))
provider.add_span_processor(
    SimpleSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1] + "/v1/traces"))
)


class Notifications:
    calls = 0

    def send(self, destination: str, message: str) -> None:
        Notifications.calls += 1
        if Notifications.calls == 1:
            raise ConnectionError("the mail server did not answer")


class Views:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, orderid: str, sku: str, batchref: str) -> None:
        self.rows.append((orderid, sku, batchref))

    def remove(self, orderid: str, sku: str) -> None:
        self.rows = [r for r in self.rows if r[:2] != (orderid, sku)]

    def for_order(self, orderid: str) -> list[dict[str, str]]:
        return []


products = InMemoryRepository(key=lambda p: p.sku)
bus = MessageBus(
    handlers.registry,
    uow=lambda: FakeUnitOfWork(products=products),
    dependencies={
        "notifications": Notifications(),
        "publish": lambda name, event: None,
        "views": Views(),
    },
    retry=RetryPolicy(wait=lambda state: 0.02, retry=retry_if_transient(also=(ConnectionError,))),
    middleware=[tracing(tracer_provider=provider)],
)
bus.handle(commands.CreateBatch("batch-1", "RED-CHAIR", 10))
bus.handle(commands.CreateBatch("batch-2", "RED-CHAIR", 10))
bus.handle(commands.Allocate("order-1", "RED-CHAIR", 8))

tracer = provider.get_tracer("allocation.entrypoints.flask_app")
with tracer.start_as_current_span(
    "POST /change_quantity", kind=SpanKind.SERVER, attributes={"http.request.method": "POST"}
) as request:
    bus.handle(commands.ChangeBatchQuantity("batch-1", "RED-CHAIR", 5))
    bus.handle(commands.Allocate("order-2", "RED-CHAIR", 20))
provider.shutdown()
print(f"{request.get_span_context().trace_id:032x}")
