"""What is measured: the scenarios, and the implementations each runs on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    #: Variants of the scenario (S5's logging set-ups, S6's sizes); () for none.
    variants: tuple[str, ...] = ()
    #: Set when the scenario cannot run yet: why, shown instead of numbers.
    not_available: str | None = None
    #: What the floors are called in this scenario, by mode, when not a direct call.
    floor_labels: tuple[tuple[str, str], ...] = ()

    def label_of(self, impl: Implementation) -> str:
        """How ``impl`` is named in this scenario's rows."""
        if impl.floor:
            return dict(self.floor_labels).get(impl.mode, impl.label)
        return impl.label


@dataclass(frozen=True)
class Implementation:
    id: str
    label: str
    #: The module in bench.impls that sets the scenarios up.
    module: str
    #: "main" (the project's environment) or the name of a peer's environment.
    env: str
    mode: str  # "sync" or "async"
    #: A floor is the direct call that the others are compared with.
    floor: bool = False
    #: A peer is another library; messagebus is compared with each.
    peer: bool = False


SCENARIOS = (
    Scenario("S1", "a command to one trivial handler"),
    Scenario("S2", "an event to three handlers"),
    Scenario("S3", "a command whose handler raises one event, handled by one handler"),
    Scenario(
        "S4", "S3 in the fake unit of work (messagebus.testing); an aggregate raises the event"
    ),
    Scenario(
        "S5",
        "S1 with logging: attempts filtered out, or logged as JSON lines to a file",
        variants=("filtered", "stdlib-filtered", "json", "json-structlog", "json-stdlib"),
    ),
    Scenario("S6", "S1 with 100 or 10,000 registered message types", variants=("100", "10000")),
    Scenario("S7", "S3 from 8 threads sharing one bus (CPU time per operation)"),
    Scenario(
        "S8",
        "the allocation example on SQLite in memory, against the same transactions "
        "written by hand with SQLAlchemy (the floor)",
        floor_labels=(("sync", "by hand (Session)"), ("async", "by hand (AsyncSession)")),
    ),
)

IMPLEMENTATIONS = (
    Implementation("floor", "direct call", "floor", "main", "sync", floor=True),
    Implementation("messagebus", "messagebus", "messagebus", "main", "sync"),
    Implementation(
        "pymessagebus", "pymessagebus", "pymessagebus", "pymessagebus", "sync", peer=True
    ),
    Implementation("lato", "lato", "lato", "lato", "sync", peer=True),
    Implementation(
        "messagebus-pypi",
        "messagebus (PyPI)",
        "pypi_messagebus",
        "messagebus-pypi",
        "sync",
        peer=True,
    ),
    Implementation("floor-async", "direct await", "floor_async", "main", "async", floor=True),
    Implementation("messagebus-async", "messagebus (async)", "messagebus_async", "main", "async"),
    Implementation("python-cqrs", "python-cqrs", "python_cqrs", "python-cqrs", "async", peer=True),
)

#: What the labels of S5's variants mean.
VARIANT_LABELS = {
    "filtered": "logs filtered out",
    "stdlib-filtered": "logs filtered out (stdlib)",
    "json": "JSON lines to a file",
    "json-stdlib": "JSON lines to a file, through logging",
    "json-structlog": "the same line by structlog alone (no bus)",
    "100": "100 types",
    "10000": "10,000 types",
}


def scenario(scenario_id: str) -> Scenario:
    return next(s for s in SCENARIOS if s.id == scenario_id)


def implementation(impl_id: str) -> Implementation:
    return next(i for i in IMPLEMENTATIONS if i.id == impl_id)
