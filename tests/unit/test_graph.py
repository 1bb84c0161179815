"""The message-flow graph: Registry.graph(), bus.graph() and `messagebus graph`."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import attrs
import pytest

from messagebus import Command, ConfigurationError, Event, MessageBus, Registry
from messagebus.cli import main
from messagebus.testing import FakeUnitOfWork

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "allocation"
HANDLERS = EXAMPLE / "allocation" / "service_layer" / "handlers.py"
DOCS = ROOT / "docs" / "how-to"
#: Under CI=true the SVG tests run: .ci/run installs Graphviz.
NEEDS_DOT = pytest.mark.skipif(
    shutil.which("dot") is None and os.environ.get("CI") != "true",
    reason="Graphviz's dot is not installed",
)


@attrs.frozen
class PlaceOrder(Command[None]):
    orderid: str


@attrs.frozen
class ChargeCard(Command[None]):
    orderid: str


@attrs.frozen
class Refund(Command[None]):
    orderid: str


@attrs.frozen
class OrderPlaced(Event):
    orderid: str


@attrs.frozen
class OrderCancelled(Event):
    orderid: str


def _registry() -> Registry:
    registry = Registry()

    @registry.register(raises=[OrderPlaced, ChargeCard, Refund])
    def place_order(command: PlaceOrder) -> None: ...

    @registry.register
    def email_customer(event: OrderPlaced) -> None: ...

    @registry.register
    def restock(event: OrderCancelled) -> None: ...

    registry.route(OrderPlaced, to="orders.events")
    registry.route(ChargeCard, to="payments.commands")
    return registry


def _example_registry() -> Registry:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from allocation.service_layer import handlers
    finally:
        sys.path.remove(str(EXAMPLE))
    return handlers.registry


def test_the_graph_follows_commands_to_handlers_events_and_destinations() -> None:
    text = _registry().graph()

    for edge in [
        "c_PlaceOrder --> h_tests_unit_test_graph__registry__locals__place_order",
        "h_tests_unit_test_graph__registry__locals__place_order --> e_OrderPlaced",
        "h_tests_unit_test_graph__registry__locals__place_order --> c_ChargeCard",
        "e_OrderPlaced --> h_tests_unit_test_graph__registry__locals__email_customer",
        "e_OrderPlaced -. routed .-> d_orders_events",
        "c_ChargeCard -. routed .-> d_payments_commands",
    ]:
        assert f"    {edge}" in text.splitlines()
    assert text.startswith("flowchart LR\n")


def test_a_command_nothing_handles_and_a_handler_nothing_reaches_stand_out() -> None:
    lines = _registry().graph().splitlines()

    assert '    c_Refund["Refund (no handler)"]:::unhandled' in lines
    assert (
        '    h_tests_unit_test_graph__registry__locals__restock[["restock (nothing raises it)"]]'
        ":::unreached" in lines
    )
    # A routed command has its owner elsewhere; a handled event is reached.
    assert '    c_ChargeCard["ChargeCard"]:::command' in lines
    assert (
        '    h_tests_unit_test_graph__registry__locals__email_customer[["email_customer"]]'
        ":::handler" in lines
    )


def test_dot_marks_the_same_problems() -> None:
    text = _registry().graph("dot")

    assert text.startswith("digraph messagebus {")
    assert re.search(r'c_Refund \[label="Refund \(no handler\)".*#b91c1c', text)
    assert re.search(r'restock \(nothing raises it\)".*#c2410c', text)
    assert 'e_OrderPlaced -> d_orders_events [label="routed", style=dashed];' in text


def test_a_bus_draws_the_graph_of_its_registry() -> None:
    registry = _registry()
    expected = registry.graph()

    bus = MessageBus(registry, uow=FakeUnitOfWork)

    assert expected == bus.graph()


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format must be one of mermaid, dot, svg, not 'png'"):
        _registry().graph("png")  # type: ignore[arg-type]


def test_raises_takes_message_types_only() -> None:
    registry = Registry()

    def place_order(command: PlaceOrder) -> None: ...

    with pytest.raises(ConfigurationError, match="takes a list of message types"):
        registry.register(place_order, raises=OrderPlaced)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="takes Command and Event types, not 'x'"):
        registry.register(place_order, raises=["x"])  # type: ignore[list-item]
    assert {} == dict(registry.commands)


def test_the_allocation_examples_mermaid_in_the_docs_is_its_wiring() -> None:
    # Regenerate with: messagebus graph --app examples/allocation/allocation/
    # service_layer/handlers.py:registry -o docs/how-to/allocation-graph.mmd
    assert (DOCS / "allocation-graph.mmd").read_text() == _example_registry().graph()


def _svg_shape(svg: str) -> tuple[set[str], set[str]]:
    """The node ids and the edges of an SVG that Graphviz drew."""
    titles = re.findall(r"<title>(.*?)</title>", svg)
    edges = {t.replace("&#45;&gt;", "->") for t in titles if "&#45;&gt;" in t}
    nodes = {t for t in titles if "&#45;&gt;" not in t and t != "messagebus"}
    return nodes, edges


def _dot_shape(dot: str) -> tuple[set[str], set[str]]:
    nodes = set(re.findall(r"^    (\w+) \[label=", dot, re.MULTILINE))
    edges = {f"{a}->{b}" for a, b in re.findall(r"^    (\w+) -> (\w+)", dot, re.MULTILINE)}
    return nodes, edges


def test_the_allocation_examples_svg_in_the_docs_is_its_wiring() -> None:
    # Regenerate with --format svg -o docs/how-to/allocation-graph.svg (needs Graphviz).
    svg = (DOCS / "allocation-graph.svg").read_text()

    assert _dot_shape(_example_registry().graph("dot")) == _svg_shape(svg)


@NEEDS_DOT
def test_svg_is_drawn_by_graphviz() -> None:
    registry = _registry()

    svg = registry.graph("svg")

    assert "<svg" in svg
    assert _dot_shape(registry.graph("dot")) == _svg_shape(svg)


def test_svg_without_graphviz_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")

    with pytest.raises(RuntimeError, match="SVG needs Graphviz's dot program"):
        _registry().graph("svg")


def test_the_command_prints_mermaid_for_a_registry(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["graph", "--app", f"{HANDLERS}:registry"])

    assert (0, _example_registry().graph()) == (status, capsys.readouterr().out)


def test_the_command_writes_dot_to_a_file(tmp_path: Path) -> None:
    output = tmp_path / "graph.dot"

    status = main(["graph", "--app", f"{HANDLERS}:registry", "--format", "dot", "-o", str(output)])

    assert (0, _example_registry().graph("dot")) == (status, output.read_text())


def test_the_command_takes_a_bus_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "graph_app.py").write_text(
        "from messagebus import MessageBus\n"
        "from messagebus.testing import FakeUnitOfWork\n"
        "from tests.unit.test_graph import _registry\n"
        "def make_bus():\n"
        "    return MessageBus(_registry(), uow=FakeUnitOfWork)\n"
    )
    monkeypatch.syspath_prepend(str(ROOT))

    status = main(["graph", "--app", f"{tmp_path / 'graph_app.py'}:make_bus"])

    assert (0, _registry().graph()) == (status, capsys.readouterr().out)


def test_the_command_without_graphviz_cannot_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "")

    status = main(["graph", "--app", f"{HANDLERS}:registry", "--format", "svg"])

    assert 2 == status
    assert "SVG needs Graphviz's dot program" in capsys.readouterr().err


def test_the_command_needs_an_application(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MESSAGEBUS_APP", raising=False)

    assert 2 == main(["graph"])
    assert "which application?" in capsys.readouterr().err


def test_a_handler_of_two_messages_is_one_node_reached_by_either() -> None:
    registry = Registry()

    @registry.register(raises=[OrderCancelled])
    def place_order(command: PlaceOrder) -> None: ...

    @registry.register
    def audit(event: OrderPlaced | OrderCancelled) -> None: ...

    lines = registry.graph().splitlines()

    (audit_node,) = [line for line in lines if "[[" in line and "audit" in line]
    node_id = audit_node.split("[[")[0].strip()
    assert audit_node.endswith(":::handler")
    assert 2 == sum(1 for line in lines if line.endswith(f"--> {node_id}"))
