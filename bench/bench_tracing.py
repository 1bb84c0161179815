"""The cost of tracing, per handler attempt: ``python bench/bench_tracing.py``.

A standalone script (not a timed test). One operation is S3 of ``make bench``:
a command whose handler raises one event, handled by one handler (two
attempts), on the sync and the async bus, each measured as best of
``--repeat`` runs of ``--operations`` operations:

- ``bare``: a bus without middleware, before ``messagebus.otel`` is imported;
- ``off``: the same bus made after ``messagebus.otel`` was imported and a
  ``Telemetry`` made (its outbox hook installed), without its middleware:
  tracing off. It should cost what ``bare`` costs: the chain is empty;
- ``spans``: the bus with ``Telemetry(...).middleware``, on the OpenTelemetry
  SDK's tracer (spans to a processor that drops them), metrics off (the
  API's no-op meter);
- ``on``: the same with the SDK's meter too (to an in-memory reader): two
  or three instruments recorded per attempt.

The cost per attempt, ``(spans - off) / 2`` and ``(on - off) / 2``, is set
against the SDK's own cost of one span in the same run: starting, making
current, setting twelve attributes and ending one span (``sdk span``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
import structlog

from messagebus import AsyncMessageBus, Command, Context, Event, MessageBus, Registry

ATTEMPTS_PER_OPERATION = 2


@attrs.frozen
class Allocate(Command[None]):
    orderid: str


@attrs.frozen
class Allocated(Event):
    orderid: str


def registry(is_async: bool) -> Registry:
    registry = Registry()
    if is_async:

        async def allocate_async(command: Allocate, context: Context) -> None:
            context.emit(Allocated(command.orderid))

        async def record_async(event: Allocated) -> None:
            return None

        registry.register(allocate_async)
        registry.register(record_async)
    else:

        def allocate(command: Allocate, context: Context) -> None:
            context.emit(Allocated(command.orderid))

        def record(event: Allocated) -> None:
            return None

        registry.register(allocate)
        registry.register(record)
    return registry


def quiet_logger() -> Any:
    # As `make bench` runs the buses: structlog filtering out every attempt line.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    return structlog.get_logger("bench")


def best_ns(run: Callable[[int], None], operations: int, repeat: int) -> float:
    """Nanoseconds per operation, the best of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter_ns()
        run(operations)
        best = min(best, (time.perf_counter_ns() - started) / operations)
    return best


def sync_runner(bus: MessageBus) -> Callable[[int], None]:
    command = Allocate("o1")
    handle = bus.handle

    def run(operations: int) -> None:
        for _ in range(operations):
            handle(command)

    return run


def async_runner(bus: AsyncMessageBus) -> Callable[[int], None]:
    command = Allocate("o1")
    handle = bus.handle

    async def loop(operations: int) -> None:
        for _ in range(operations):
            await handle(command)

    def run(operations: int) -> None:
        asyncio.run(loop(operations))

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--operations", type=int, default=20_000, help="operations per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each case (best kept)")
    options = parser.parse_args(argv)
    n, repeat = options.operations, options.repeat
    logger = quiet_logger()

    def buses(middleware: list[Any], is_async: bool) -> Callable[[int], None]:
        if is_async:
            return async_runner(
                AsyncMessageBus(registry(True), logger=logger, middleware=middleware)
            )
        return sync_runner(MessageBus(registry(False), logger=logger, middleware=middleware))

    bare = {kind: best_ns(buses([], kind), n, repeat) for kind in (False, True)}

    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from messagebus.otel import Telemetry

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(Dropped()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    spans_only = Telemetry(tracer_provider=tracer_provider, meter_provider=NoOpMeterProvider())

    off = {kind: best_ns(buses([], kind), n, repeat) for kind in (False, True)}
    traced = {
        False: best_ns(buses([spans_only.middleware], False), n, repeat),
        True: best_ns(buses([spans_only.async_middleware], True), n, repeat),
    }
    on = {
        False: best_ns(buses([telemetry.middleware], False), n, repeat),
        True: best_ns(buses([telemetry.async_middleware], True), n, repeat),
    }

    tracer = tracer_provider.get_tracer("bench")
    attributes = {f"attribute.{i}": "value" for i in range(12)}

    def spans(operations: int) -> None:
        for _ in range(operations):
            with tracer.start_as_current_span("process Allocate", attributes=attributes):
                pass

    span_ns = best_ns(spans, n, repeat)

    print(f"{n:,} operations of {ATTEMPTS_PER_OPERATION} attempts, best of {repeat} runs")
    print(f"one SDK span (start, current, 12 attributes, end): {span_ns / 1000:.2f} us")
    print(f"{'':8}{'bare':>10}{'off':>10}{'spans':>10}{'on':>10}   per attempt: spans, on")
    us = 1000
    for kind, label in ((False, "sync"), (True, "async")):
        spans_cost = (traced[kind] - off[kind]) / ATTEMPTS_PER_OPERATION
        on_cost = (on[kind] - off[kind]) / ATTEMPTS_PER_OPERATION
        print(
            f"{label:8}{bare[kind] / us:>8.2f}us{off[kind] / us:>8.2f}us"
            f"{traced[kind] / us:>8.2f}us{on[kind] / us:>8.2f}us"
            f"   {spans_cost / us:.2f} us ({spans_cost / span_ns:.1f} SDK spans), "
            f"{on_cost / us:.2f} us ({on_cost / span_ns:.1f} SDK spans)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
