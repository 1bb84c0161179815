"""What is measured: the scenarios, and the implementations each runs on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    #: Variants of the scenario (S5's logging set-ups, S6's sizes); () for none.
    variants: tuple[str, ...] = ()
    #: The logging set-ups messagebus also runs the scenario in, beside the
    #: tuned one (no variant): the floors and the peers log nothing and run it once.
    setups: tuple[str, ...] = ()
    #: Set when the scenario cannot run yet: why, shown instead of numbers.
    not_available: str | None = None
    #: What the floors are called in this scenario, by mode, when not a direct call.
    floor_labels: tuple[tuple[str, str], ...] = ()

    def variants_of(self, impl: Implementation) -> tuple[str | None, ...]:
        """The variants ``impl`` runs: a floor one; the peers the scenario's; the buses
        its set-ups too (structlog alone, which has no bus, only beside the sync one)."""
        variants: tuple[str | None, ...] = self.variants or (None,)
        if impl.floor:
            return (None,)
        if impl.peer:
            return variants
        setups = [s for s in self.setups if impl.mode == "sync" or s not in ALONE.values()]
        return (*variants, *setups)

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


#: The logging set-ups the docs show, each measured in S1-S3 on both buses; the
#: tuned one, structlog filtering everything out (as the peers log nothing), is
#: the scenarios' own (no variant) and the headline. ``alone-*``: structlog
#: alone writing the lines of one dispatch at INFO, without a bus.
SETUPS = (
    "unconfigured",
    "warning-stdlib",
    "warning-direct",
    "info-stdlib",
    "info-direct",
    "alone-stdlib",
    "alone-direct",
)

#: The set-ups in which every attempt is logged, and structlog alone writing
#: the same lines in the same configuration, their yardstick.
ALONE = {"info-stdlib": "alone-stdlib", "info-direct": "alone-direct"}

#: The set-ups in which the bus is compared with the peers (all but INFO's);
#: None is the tuned one.
PEER_SETUPS: tuple[str | None, ...] = (None, "unconfigured", "warning-stdlib", "warning-direct")

#: What the set-ups are, as the README and the reports name them.
SETUP_LABELS = {
    None: "tuned: structlog filtering out everything (as `bench/` configures it)",
    "unconfigured": "nothing configured (the README's quick look)",
    "warning-stdlib": '`configure_logging(json=True, level="WARNING")`',
    "warning-direct": '`configure_logging(json=True, level="WARNING", stdlib=False)`',
    "info-stdlib": "INFO, JSON lines to a file: `configure_logging(json=True, path=...)`",
    "info-direct": "INFO, JSON lines to a file: `configure_logging(json=True, path=..., "
    "stdlib=False)`",
    "alone-stdlib": "the same lines by structlog alone (no bus), through logging",
    "alone-direct": "the same lines by structlog alone (no bus), `stdlib=False`",
}

#: The attempts (each a line at INFO) one operation of a scenario makes.
LINES_PER_OPERATION = {"S1": 1, "S2": 3, "S3": 2}

SCENARIOS = (
    Scenario("S1", "a command to one trivial handler", setups=SETUPS),
    Scenario("S2", "an event to three handlers", setups=SETUPS),
    Scenario(
        "S3", "a command whose handler raises one event, handled by one handler", setups=SETUPS
    ),
    Scenario(
        "S4", "S3 in the fake unit of work (messagebus.testing); an aggregate raises the event"
    ),
    Scenario(
        "S5",
        "S1 with logging configured by hand: attempts filtered out by structlog, "
        "or by the standard library",
        variants=("filtered", "stdlib-filtered"),
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

#: What the labels of the variants and set-ups mean, in the tables' rows.
VARIANT_LABELS = {
    "filtered": "logs filtered out",
    "stdlib-filtered": "logs filtered out (stdlib)",
    "unconfigured": "nothing configured",
    "warning-stdlib": "configure_logging at WARNING",
    "warning-direct": "configure_logging at WARNING, stdlib=False",
    "info-stdlib": "INFO, JSON lines to a file",
    "info-direct": "INFO, JSON lines to a file, stdlib=False",
    "alone-stdlib": "INFO lines by structlog alone (no bus)",
    "alone-direct": "INFO lines by structlog alone (no bus), stdlib=False",
    "100": "100 types",
    "10000": "10,000 types",
}


def scenario(scenario_id: str) -> Scenario:
    return next(s for s in SCENARIOS if s.id == scenario_id)


def implementation(impl_id: str) -> Implementation:
    return next(i for i in IMPLEMENTATIONS if i.id == impl_id)
