"""The message-flow graph of a registry: who handles what, what follows, what leaves.

Drawn from the wiring alone: commands -> their handler -> the events it
raises (and the commands it sends) -> their handlers, and the destinations
that routed messages go to. What a handler raises cannot be read from its
code; it is what the handler declared with ``Registry.register(raises=[...])``.

Two things stand out, drawn dashed and coloured:

- a command that something sends and nothing handles or routes ("no handler");
- an event handler whose event nothing in the wiring raises ("nothing raises
  it"): dead code, or an event that comes from another service, or a
  ``raises=`` that was forgotten.

Formats: Mermaid text (``flowchart LR``), Graphviz DOT, and SVG (DOT drawn by
Graphviz's ``dot`` program, which must be installed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from .messages import Command, Message, message_name

Format = Literal["mermaid", "dot", "svg"]
FORMATS: tuple[str, ...] = ("mermaid", "dot", "svg")


@attrs.frozen
class Node:
    id: str
    label: str
    kind: Literal["command", "event", "handler", "destination"]
    #: "unhandled" (a command nothing handles) or "unreached" (a handler nothing reaches).
    problem: str | None = None


@attrs.frozen
class Graph:
    nodes: tuple[Node, ...]
    #: (from, to, label) in drawing order.
    edges: tuple[tuple[str, str, str], ...]


def _id(prefix: str, name: str) -> str:
    return f"{prefix}_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"


def build(registry: Any) -> Graph:
    """The graph of a :class:`~messagebus.Registry`'s handlers and routes."""
    commands: dict[type[Message], Any] = dict(registry.commands)
    events: dict[type[Message], list[Any]] = {t: list(rs) for t, rs in registry.events.items()}
    routes: dict[type[Message], Any] = dict(registry.routes)

    raised_somewhere: set[type[Message]] = set()
    for registration in [*commands.values(), *(r for rs in events.values() for r in rs)]:
        raised_somewhere.update(registration.raises)

    # A handler is reached when any message it handles is a command or is raised.
    reached = {r.name for r in commands.values()} | {
        r.name for t, rs in events.items() if t in raised_somewhere for r in rs
    }

    def by_name(types: Iterable[type[Message]]) -> list[type[Message]]:
        return sorted(types, key=message_name)

    messages = by_name(set(commands) | set(events) | set(routes) | raised_somewhere)
    nodes: dict[str, Node] = {}
    edges: list[tuple[str, str, str]] = []

    def message_node(message_type: type[Message]) -> str:
        name = message_name(message_type)
        is_command = issubclass(message_type, Command)
        node_id = _id("c" if is_command else "e", name)
        if node_id not in nodes:
            problem = None
            if is_command and message_type not in commands and message_type not in routes:
                problem = "unhandled"
            nodes[node_id] = Node(node_id, name, "command" if is_command else "event", problem)
        return node_id

    def handler_node(registration: Any) -> str:
        node_id = _id("h", registration.name)
        if node_id not in nodes:
            label = registration.name.rsplit(".", 1)[-1]
            problem = None if registration.name in reached else "unreached"
            nodes[node_id] = Node(node_id, label, "handler", problem)
        return node_id

    for message_type in messages:
        message_node(message_type)
    for message_type in messages:
        source = message_node(message_type)
        registrations = (
            [commands[message_type]] if message_type in commands else events.get(message_type, [])
        )
        for registration in registrations:
            handler = handler_node(registration)
            edges.append((source, handler, ""))
            for raised in by_name(registration.raises):
                edges.append((handler, message_node(raised), ""))
        route = routes.get(message_type)
        if route is not None:
            destination = _id("d", route.destination)
            nodes.setdefault(destination, Node(destination, route.destination, "destination"))
            edges.append((source, destination, "routed"))
    return Graph(tuple(nodes.values()), tuple(dict.fromkeys(edges)))


_NOTE = {"unhandled": " (no handler)", "unreached": " (nothing raises it)"}

_MERMAID_SHAPES = {
    "command": ('["', '"]'),
    "event": ('(["', '"])'),
    "handler": ('[["', '"]]'),
    "destination": ('[("', '")]'),
}

_MERMAID_CLASSES = (
    "    classDef command fill:#dbeafe,stroke:#1e3a8a",
    "    classDef event fill:#fef3c7,stroke:#92400e",
    "    classDef handler fill:#ffffff,stroke:#374151",
    "    classDef destination fill:#e5e7eb,stroke:#111827",
    "    classDef unhandled fill:#fee2e2,stroke:#b91c1c,stroke-width:3px,stroke-dasharray:6 3",
    "    classDef unreached fill:#ffedd5,stroke:#c2410c,stroke-width:3px,stroke-dasharray:6 3",
)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def mermaid(graph: Graph) -> str:
    """Mermaid flowchart text (for Markdown fences, GitHub, mkdocs-material, notebooks)."""
    lines = ["flowchart LR"]
    for node in graph.nodes:
        opening, closing = _MERMAID_SHAPES[node.kind]
        label = _mermaid_text(node.label + _NOTE.get(node.problem or "", ""))
        lines.append(f"    {node.id}{opening}{label}{closing}:::{node.problem or node.kind}")
    for source, target, label in graph.edges:
        arrow = f" -. {label} .-> " if label else " --> "
        lines.append(f"    {source}{arrow}{target}")
    lines.extend(_MERMAID_CLASSES)
    return "\n".join(lines) + "\n"


_DOT_STYLES = {
    "command": 'shape=box, style=filled, fillcolor="#dbeafe", color="#1e3a8a"',
    "event": 'shape=box, style="rounded,filled", fillcolor="#fef3c7", color="#92400e"',
    "handler": 'shape=component, style=filled, fillcolor="#ffffff", color="#374151"',
    "destination": 'shape=cylinder, style=filled, fillcolor="#e5e7eb", color="#111827"',
}
_DOT_PROBLEMS = {
    "unhandled": 'style="filled,dashed,bold", fillcolor="#fee2e2", color="#b91c1c"',
    "unreached": 'style="filled,dashed,bold", fillcolor="#ffedd5", color="#c2410c"',
}


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(graph: Graph) -> str:
    """Graphviz DOT text."""
    lines = [
        "digraph messagebus {",
        "    rankdir=LR;",
        '    node [fontname="Helvetica", fontsize=11];',
        '    edge [fontname="Helvetica", fontsize=9];',
    ]
    for node in graph.nodes:
        style = _DOT_STYLES[node.kind]
        if node.problem:
            style += ", " + _DOT_PROBLEMS[node.problem]
        label = _dot_text(node.label + _NOTE.get(node.problem or "", ""))
        lines.append(f"    {node.id} [label={label}, {style}];")
    for source, target, label in graph.edges:
        attributes = f" [label={_dot_text(label)}, style=dashed]" if label else ""
        lines.append(f"    {source} -> {target}{attributes};")
    lines.append("}")
    return "\n".join(lines) + "\n"


class GraphvizNotFoundError(RuntimeError):
    """SVG was asked for, and Graphviz's ``dot`` program is not installed."""


def svg(graph: Graph) -> str:
    """The graph drawn as SVG by Graphviz's ``dot``.

    Raises:
        GraphvizNotFoundError: ``dot`` is not on the PATH.
    """
    program = shutil.which("dot")
    if program is None:
        raise GraphvizNotFoundError(
            "SVG needs Graphviz's dot program (e.g. apt-get install graphviz); "
            "Mermaid text needs nothing"
        )
    result = subprocess.run(
        [program, "-Tsvg"], input=dot(graph), capture_output=True, text=True, check=True
    )
    return result.stdout


def render(registry: Any, format: str) -> str:
    """The graph of ``registry`` in ``format`` (``mermaid``, ``dot`` or ``svg``)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    graph = build(registry)
    if format == "mermaid":
        return mermaid(graph)
    if format == "dot":
        return dot(graph)
    return svg(graph)
