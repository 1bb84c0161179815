"""Results: from jobs to a JSON-safe record, its targets, and tables (text or Markdown)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from bench._catalogue import (
    ALONE,
    IMPLEMENTATIONS,
    LINES_PER_OPERATION,
    PEER_SETUPS,
    SCENARIOS,
    SETUP_LABELS,
    SETUPS,
    VARIANT_LABELS,
)
from bench._runner import Job

PEERS = [impl for impl in IMPLEMENTATIONS if impl.peer]

# The targets, as ratios measured in the same run.
FASTEST_PEER_MAX = 0.7
FILTERED_LOGGING_MAX = 0.05
INFO_VS_ALONE_MAX = 1.2
S6_FLAT_MAX = 1.10
S8_OVERHEAD_MAX = 0.05
ASYNC_VS_SYNC_MAX = 1.5

#: The set-ups as the targets name them.
SETUP_SHORT: dict[str | None, str] = {
    None: "tuned",
    "unconfigured": "nothing configured",
    "warning-stdlib": "WARNING",
    "warning-direct": "WARNING, stdlib=False",
    "info-stdlib": "INFO",
    "info-direct": "INFO, stdlib=False",
}

#: The buses, by mode, and the fastest peers they are compared with.
BUSES = {"sync": "messagebus", "async": "messagebus-async"}


def rows(jobs: Iterable[Job], reference_ns: float) -> list[dict[str, Any]]:
    """One row per job, with its statistics over rounds and its ratios.

    Each round's time is adjusted to the machine's unhindered speed: multiplied
    by ``reference_ns`` (the fastest reference loop of the run) over the
    reference loop of that round's process. The raw times stay in the row.
    """
    records = []
    for job in jobs:
        record: dict[str, Any] = {
            "scenario": job.scenario.id,
            "variant": job.variant,
            "impl": job.impl.id,
            "label": job.scenario.label_of(job.impl),
            "mode": job.impl.mode,
            "status": job.status,
        }
        if job.status == "ok":
            adjusted = [
                raw * reference_ns / reference
                for raw, reference in zip(job.round_ns, job.round_reference_ns, strict=True)
            ]
            record.update(
                median_ns=statistics.median(adjusted),
                min_ns=min(adjusted),
                max_ns=max(adjusted),
                round_ns=[round(x, 1) for x in adjusted],
                raw_round_ns=[round(x, 1) for x in job.round_ns],
                round_reference_ns=[round(x, 1) for x in job.round_reference_ns],
                repeats=len(job.repeat_ns[0]),
                number=job.number,
                output_bytes_per_op=round(max(job.output_bytes_per_op, default=0.0), 1),
            )
        else:
            record["reason"] = job.reason
        if job.note:
            record["note"] = job.note
        records.append(record)
    _add_ratios(records)
    return records


def _find(
    records: list[dict[str, Any]], scenario: str, impl: str, variant: str | None
) -> dict[str, Any] | None:
    for record in records:
        if (
            record["scenario"] == scenario
            and record["impl"] == impl
            and record["variant"] == variant
        ):
            return record if record["status"] == "ok" else None
    return None


def _add_ratios(records: list[dict[str, Any]]) -> None:
    floors = {impl.mode: impl.id for impl in IMPLEMENTATIONS if impl.floor}
    for record in records:
        if record["status"] != "ok":
            continue
        floor = _find(records, record["scenario"], floors[record["mode"]], None)
        record["x_floor"] = record["median_ns"] / floor["median_ns"] if floor else None
        record["x_peers"] = {}
        # The peers log nothing: a bus in a logging set-up is compared with their one run.
        variant = None if record["variant"] in SETUPS else record["variant"]
        for peer in PEERS:
            if peer.mode != record["mode"] or peer.id == record["impl"]:
                continue
            other = _find(records, record["scenario"], peer.id, variant)
            if other:
                record["x_peers"][peer.id] = record["median_ns"] / other["median_ns"]
        if record["variant"] in ALONE:
            record["x_alone"] = x_alone(
                records, record["scenario"], record["mode"], record["variant"]
            )


def refresh(result: dict[str, Any]) -> dict[str, Any]:
    """A saved result with its ratios, targets and facts computed again from its
    times, as this version of the report computes them."""
    records = result["results"]
    _add_ratios(records)
    result["targets"] = targets(records)
    result["logged_attempt_us"] = logged_attempt_us(records)
    return result


def _median(
    records: list[dict[str, Any]], scenario: str, impl: str, variant: str | None = None
) -> float | None:
    found = _find(records, scenario, impl, variant)
    return found["median_ns"] if found else None


def fastest_peer(
    records: list[dict[str, Any]], scenario_id: str, mode: str
) -> tuple[float, str] | None:
    """The median and the label of the fastest peer of ``mode`` in a scenario."""
    peers = [
        (value, peer.label)
        for peer in PEERS
        if peer.mode == mode and (value := _median(records, scenario_id, peer.id)) is not None
    ]
    return min(peers) if peers else None


def x_fastest_peer(
    records: list[dict[str, Any]], scenario_id: str, mode: str, setup: str | None
) -> float | None:
    """A bus's median in a set-up over the fastest peer's of its kind."""
    ours = _median(records, scenario_id, BUSES[mode], setup)
    fastest = fastest_peer(records, scenario_id, mode)
    return ours / fastest[0] if ours and fastest else None


def x_alone(records: list[dict[str, Any]], scenario_id: str, mode: str, setup: str) -> float | None:
    """What logging every attempt adds to a dispatch, over what structlog alone
    needs to write the same lines in the same configuration.

    The bus at INFO minus the same bus in the tuned set-up (nothing logged),
    over structlog alone writing the operation's lines (measured once, in the
    sync bus's environment: it has no bus).
    """
    logged = _median(records, scenario_id, BUSES[mode], setup)
    quiet = _median(records, scenario_id, BUSES[mode])
    alone = _median(records, scenario_id, BUSES["sync"], ALONE[setup])
    return (logged - quiet) / alone if logged and quiet and alone else None


def targets(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The targets, each PASS, FAIL or N/A with what it was measured from."""
    results = []

    def add(name: str, ok: bool | None, detail: str, short: str) -> None:
        status = "N/A" if ok is None else "PASS" if ok else "FAIL"
        results.append({"target": name, "status": status, "detail": detail, "short": short})

    for setup in PEER_SETUPS:
        name = (
            f"S1-S3, {SETUP_SHORT[setup]}: messagebus <= {FASTEST_PEER_MAX}x the fastest sync peer"
        )
        found = [
            (scenario_id, ratio, fastest)
            for scenario_id in LINES_PER_OPERATION
            if (ratio := x_fastest_peer(records, scenario_id, "sync", setup)) is not None
            and (fastest := fastest_peer(records, scenario_id, "sync")) is not None
        ]
        if not found:
            add(
                name,
                None,
                "messagebus or every sync peer missing from this run",
                f"peers ({SETUP_SHORT[setup]})",
            )
            continue
        detail = ", ".join(
            f"{scenario_id} {ratio:.2f}x {label} ({ratio * fastest:,.0f} / {fastest:,.0f} ns)"
            for scenario_id, ratio, (fastest, label) in found
        )
        ok = all(ratio <= FASTEST_PEER_MAX for _, ratio, _ in found)
        add(name, ok, detail, f"peers ({SETUP_SHORT[setup]})")

    for setup in ALONE:
        name = (
            f"S1-S3, {SETUP_SHORT[setup]}: a logged attempt <= {INFO_VS_ALONE_MAX}x "
            "structlog alone (what logging adds, over the same lines by structlog alone)"
        )
        ratios = [
            (f"{scenario_id}{'' if mode == 'sync' else ' async'}", ratio)
            for mode in BUSES
            for scenario_id in LINES_PER_OPERATION
            if (ratio := x_alone(records, scenario_id, mode, setup)) is not None
        ]
        if not ratios:
            add(
                name,
                None,
                "the set-up or structlog alone missing from this run",
                f"INFO vs structlog alone ({SETUP_SHORT[setup]})",
            )
            continue
        alone = [
            f"{scenario_id} {value / 1000:,.1f} us"
            for scenario_id in LINES_PER_OPERATION
            if (value := _median(records, scenario_id, BUSES["sync"], ALONE[setup]))
        ]
        detail = ", ".join(f"{label} {ratio:.2f}x" for label, ratio in ratios)
        add(
            name,
            all(ratio <= INFO_VS_ALONE_MAX for _, ratio in ratios),
            f"{detail} (structlog alone: {', '.join(alone)})",
            f"INFO vs structlog alone ({SETUP_SHORT[setup]})",
        )

    # Each bus is measured against its own floor (a direct call; an await of
    # the same handler as a coroutine), and the async bus's ratio to its floor
    # is compared with the sync bus's: an await costs ~3x a call here, and the
    # async bus cannot be quicker than an await. In every set-up but
    # structlog alone's (no bus); S4 in the tuned one only.
    worst: list[tuple[str, str, float, float]] = []
    for setup in (None, *(s for s in SETUPS if s not in ALONE.values())):
        pairs = [
            (scenario_id, (asyn / async_floor) / (sync / sync_floor), asyn / sync)
            for scenario_id in (*LINES_PER_OPERATION, *(("S4",) if setup is None else ()))
            if (sync := _median(records, scenario_id, "messagebus", setup))
            and (asyn := _median(records, scenario_id, "messagebus-async", setup))
            and (sync_floor := _median(records, scenario_id, "floor"))
            and (async_floor := _median(records, scenario_id, "floor-async"))
        ]
        if pairs:
            scenario_id, ratio, raw = max(pairs, key=lambda pair: pair[1])
            worst.append((SETUP_SHORT[setup], scenario_id, ratio, raw))
    name = (
        f"async bus within {ASYNC_VS_SYNC_MAX}x of the sync bus, each against its floor "
        "(the worst of S1-S3 in each set-up, and S4 in the tuned one)"
    )
    if worst:
        detail = ", ".join(
            f"{setup} {ratio:.2f}x ({scenario_id}; raw {raw:.2f}x)"
            for setup, scenario_id, ratio, raw in worst
        )
        add(
            name,
            all(ratio <= ASYNC_VS_SYNC_MAX for _, _, ratio, _ in worst),
            detail,
            "async vs sync",
        )
    else:
        reasons = [
            f"{r['status']}: {r.get('reason')}"
            for r in records
            if r["impl"] == "messagebus-async"
            and r["scenario"] in ("S1", "S2", "S3", "S4")
            and r["status"] != "ok"
        ]
        detail = reasons[0] if reasons else "messagebus (async) or S1-S4 not in this run"
        add(name, None, detail, "async vs sync")

    def add_overhead(
        name: str, short: str, ours: float | None, base: float | None, limit: float, missing: str
    ) -> None:
        if ours and base:
            overhead = ours / base - 1
            add(name, overhead <= limit, f"{overhead:+.1%} ({ours:,.0f} vs {base:,.0f} ns)", short)
        else:
            add(name, None, missing, short)

    add_overhead(
        f"S5: filtered-out logging adds <= {FILTERED_LOGGING_MAX:.0%} (vs S1, nothing logged)",
        "filtered logging",
        _median(records, "S5", "messagebus", "filtered"),
        _median(records, "S1", "messagebus"),
        FILTERED_LOGGING_MAX,
        "S1 or S5[filtered] missing from this run",
    )

    small = _median(records, "S6", "messagebus", "100")
    large = _median(records, "S6", "messagebus", "10000")
    name = f"S6: flat (10,000 types <= {S6_FLAT_MAX:.2f}x 100 types)"
    if small and large:
        add(
            name,
            large / small <= S6_FLAT_MAX,
            f"{large / small:.2f}x ({large:,.0f} / {small:,.0f} ns)",
            "S6 flat",
        )
    else:
        add(name, None, "S6 missing from this run", "S6 flat")

    add_overhead(
        f"S8: framework overhead <= {S8_OVERHEAD_MAX:.0%} "
        "(the allocation example over the same transactions by hand)",
        "S8",
        _median(records, "S8", "messagebus"),
        _median(records, "S8", "floor"),
        S8_OVERHEAD_MAX,
        "S8 of messagebus or of the hand-written floor missing from this run",
    )
    return results


def s6_ratios(records: list[dict[str, Any]]) -> dict[str, float]:
    """For each implementation, S6's time with 10,000 types over its time with 100."""
    ratios = {}
    for impl in IMPLEMENTATIONS:
        small = _median(records, "S6", impl.id, "100")
        large = _median(records, "S6", impl.id, "10000")
        if small and large:
            ratios[impl.label] = large / small
    return ratios


def s8_overheads(records: list[dict[str, Any]]) -> dict[str, float]:
    """For each bus, S8's time over the same transactions written by hand, minus one."""
    overheads = {}
    for impl in IMPLEMENTATIONS:
        if impl.floor or impl.peer:
            continue
        floor = next(i for i in IMPLEMENTATIONS if i.floor and i.mode == impl.mode)
        ours = _median(records, "S8", impl.id)
        by_hand = _median(records, "S8", floor.id)
        if ours and by_hand:
            overheads[impl.label] = ours / by_hand - 1
    return overheads


def logged_attempt_us(records: list[dict[str, Any]]) -> float | None:
    """What one logged attempt costs the sync bus in S1, INFO with ``stdlib=False``."""
    logged = _median(records, "S1", "messagebus", "info-direct")
    quiet = _median(records, "S1", "messagebus")
    return (logged - quiet) / 1000 if logged and quiet else None


# -- rendering ------------------------------------------------------------------


def _ns(value: float) -> str:
    return f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def _label(record: dict[str, Any]) -> str:
    variant = record["variant"]
    return (
        f"{record['label']}, {VARIANT_LABELS.get(variant, variant)}" if variant else record["label"]
    )


def _ordered(records: list[dict[str, Any]], scenario: str) -> list[dict[str, Any]]:
    """A scenario's rows, sync first; an implementation that is n/a for every
    variant, for the same reason, shows as one row without a variant."""
    order = {impl.id: i for i, impl in enumerate(IMPLEMENTATIONS)}
    variants = {v: i for s in SCENARIOS for i, v in enumerate((*s.variants, *s.setups))}
    found = sorted(
        (r for r in records if r["scenario"] == scenario),
        key=lambda r: (r["mode"] != "sync", order[r["impl"]], variants.get(r["variant"], -1)),
    )
    shown: list[dict[str, Any]] = []
    for record in found:
        previous = shown[-1] if shown else None
        if (
            previous is not None
            and record["status"] != "ok"
            and previous["impl"] == record["impl"]
            and previous["status"] == record["status"]
            and previous.get("reason") == record.get("reason")
        ):
            shown[-1] = {**previous, "variant": None}
            continue
        shown.append(record)
    return shown


def _status_text(record: dict[str, Any]) -> str:
    return f"{record['status']}: {record.get('reason') or ''}".rstrip(": ")


def text(result: dict[str, Any]) -> str:
    """The tables and targets, for a terminal."""
    records = result["results"]
    peer_heads = [f"x {peer.label}" for peer in PEERS]
    label_width = max([46, *(len(_label(r)) for r in records)])
    widths = [label_width, 10, 10, 10, 8, *[max(8, len(h)) for h in peer_heads]]
    heads = ["", "median ns", "min", "max", "x floor", *peer_heads]
    out = []
    for scenario in SCENARIOS:
        out.append(f"{scenario.id}  {scenario.title}")
        if scenario.not_available:
            out.append(f"  not available yet: {scenario.not_available}")
            out.append("")
            continue
        scenario_records = _ordered(records, scenario.id)
        if not scenario_records:
            out.append("  not run")
            out.append("")
            continue
        out.append("  " + _cells(heads, widths))
        for record in scenario_records:
            if record["status"] != "ok":
                out.append(f"  {_label(record):<{widths[0]}} {_status_text(record)}")
                continue
            peers = [_ratio(record["x_peers"].get(peer.id)) for peer in PEERS]
            cells = [
                _label(record),
                _ns(record["median_ns"]),
                _ns(record["min_ns"]),
                _ns(record["max_ns"]),
                _ratio(record["x_floor"]),
                *peers,
            ]
            out.append("  " + _cells(cells, widths))
        notes = dict.fromkeys(
            f"  note, {r['label']}: {r['note']}" for r in scenario_records if r.get("note")
        )
        out.extend(notes)
        out.append("")
    out.append("Targets (ratios in this run; never asserted by tests):")
    out.extend(f"  {t['status']:<4}  {t['target']}: {t['detail']}" for t in result["targets"])
    out.extend(f"  {line}" for line in _facts(result))
    out.append("")
    out.append(machine_line(result))
    return "\n".join(out)


def _facts(result: dict[str, Any]) -> list[str]:
    facts = []
    cost = result.get("logged_attempt_us")
    if cost is not None:
        facts.append(
            f"one logged attempt costs {cost:.2f} us (S1 at INFO with stdlib=False, minus S1 tuned)"
        )
    written = [
        f"{r['scenario']} {_label(r)} {r['output_bytes_per_op']:,.0f}"
        for r in result["results"]
        if r.get("output_bytes_per_op")
    ]
    facts.append(
        "bytes written to stdout and stderr per operation (to a file here): "
        + (", ".join(written) if written else "none, in every measurement")
    )
    ratios = s6_ratios(result["results"])
    if ratios:
        facts.append(
            "S6, 10,000 types / 100 types: "
            + ", ".join(f"{label} {ratio:.2f}x" for label, ratio in ratios.items())
        )
    overheads = s8_overheads(result["results"])
    if overheads:
        facts.append(
            "S8, framework overhead over the same transactions by hand: "
            + ", ".join(f"{label} {overhead:+.1%}" for label, overhead in overheads.items())
        )
    return facts


def _cells(cells: list[str], widths: list[int]) -> str:
    first, *rest = cells
    return f"{first:<{widths[0]}}" + "".join(
        f" {c:>{w}}" for c, w in zip(rest, widths[1:], strict=True)
    )


def machine_line(result: dict[str, Any]) -> str:
    machine = result["machine"]
    run = result["run"]
    load = (
        f"load average {machine.get('load_average_at_start')} -> {run.get('load_average_at_end')}"
    )
    kind = "quick run" if run["quick"] else "full run"
    if run.get("reference_ns"):
        references = [
            reference
            for record in result["results"]
            for reference in record.get("round_reference_ns", ())
        ]
        slowest = max(references, default=run["reference_ns"]) / run["reference_ns"]
        load += (
            f"; times adjusted to a reference loop of {run['reference_ns']:.0f} ns"
            f" (processes ran up to {slowest:.1f}x slower)"
        )
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['os']}; "
        f"{kind}: {run['rounds']} round{'s' if run['rounds'] != 1 else ''}"
        f" x {run['repeats']} repeats"
        f" of ~{run['target_s'] * 1000:g} ms, "
        f"{run['duration_s']:.0f} s, {load}; {run['started']}"
    )


TIMES, DASH = "\u00d7", "\u2013"  # the multiplication sign and the en dash


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(result: dict[str, Any]) -> str:
    """The table and targets as Markdown, for the README and the docs."""
    records = result["results"]
    blank = [""] * (2 + len(PEERS))
    lines = [
        _md_row(
            ["scenario", "implementation", "median ns/op", f"min{DASH}max", f"{TIMES} floor"]
            + [f"{TIMES} {peer.label}" for peer in PEERS]
        ),
        "|---|---|" + "---:|" * (3 + len(PEERS)),
    ]
    notes: list[str] = []
    for scenario in SCENARIOS:
        if scenario.not_available:
            notes.append(f"{scenario.id}: {scenario.not_available}.")
            lines.append(_md_row([scenario.id, "", f"not available yet [{len(notes)}]", *blank]))
            continue
        for index, record in enumerate(_ordered(records, scenario.id)):
            head = "" if index else scenario.id
            if record["status"] != "ok":
                reason = record.get("reason") or record["status"]
                notes.append(f"{scenario.id}, {_label(record)}: {reason}.")
                lines.append(
                    _md_row([head, _label(record), f"{record['status']} [{len(notes)}]", *blank])
                )
                continue
            label = _label(record)
            if record.get("note"):
                note = f"{record['label']}: {record['note']}."
                if note not in notes:
                    notes.append(note)
                label += f" [{notes.index(note) + 1}]"
            lines.append(
                _md_row(
                    [
                        head,
                        label,
                        _ns(record["median_ns"]),
                        f"{_ns(record['min_ns'])}{DASH}{_ns(record['max_ns'])}",
                        _ratio(record["x_floor"]),
                        *[_ratio(record["x_peers"].get(peer.id)) for peer in PEERS],
                    ]
                )
            )
    out = ["\n".join(lines), ""]
    if notes:
        out.append("\n".join(f"{i}. {note}" for i, note in enumerate(notes, 1)))
        out.append("")
    out.append("S1-S3 in each logging set-up:\n\n" + setups(result))
    out.append("| target | status | measured |\n|---|---|---|")
    for target in result["targets"]:
        out[-1] += "\n" + _md_row([target["target"], target["status"], target["detail"]])
    out.append("")
    facts = _facts(result)
    if facts:
        out.append("\n".join(f"- {fact}" for fact in facts))
        out.append("")
    out.append(f"Measured on: {machine_line(result)}.")
    return "\n".join(out) + "\n"


def _cell(value: float | None, ratio: float | None) -> str:
    if value is None:
        return "n/a"
    return _ns(value) + (f" ({_ratio(ratio)}{TIMES})" if ratio is not None else "")


def setups(result: dict[str, Any]) -> str:
    """S1-S3 in every logging set-up, on both buses: a Markdown table of median ns
    per operation, with the ratio each set-up's target is about."""
    records = result["results"]
    scenario_ids = list(LINES_PER_OPERATION)
    heads = [*scenario_ids, *(f"{scenario_id} async" for scenario_id in scenario_ids)]
    lines = [
        _md_row(["logging set-up", *heads]),
        "|---|" + "---:|" * len(heads),
    ]
    for setup in (None, *SETUPS):
        cells = []
        for mode in BUSES:
            for scenario_id in scenario_ids:
                if setup in ALONE.values():
                    impl = BUSES["sync"]
                    value = _median(records, scenario_id, impl, setup) if mode == "sync" else None
                    cells.append(_ns(value) if value is not None else "")
                    continue
                value = _median(records, scenario_id, BUSES[mode], setup)
                ratio = (
                    x_alone(records, scenario_id, mode, setup)
                    if setup in ALONE
                    else x_fastest_peer(records, scenario_id, mode, setup)
                )
                cells.append(_cell(value, ratio))
        label = SETUP_LABELS[setup]
        lines.append(_md_row([f"**{label}**" if setup is None else label, *cells]))
    peers = {
        mode: sorted({found[1] for s in scenario_ids if (found := fastest_peer(records, s, mode))})
        for mode in BUSES
    }
    return (
        "\n".join(lines)
        + "\n\nMedian ns per operation. In brackets: against the fastest peer of the"
        + f" same kind ({', '.join(peers['sync']) or 'none in this run'}; async:"
        + f" {', '.join(peers['async']) or 'none in this run'}), which log nothing; in the"
        + " INFO rows, what logging adds to the bus's tuned time, against structlog"
        + " alone writing the same lines (a line per attempt: S1 one, S2 three, S3 two)"
        + " in the same configuration, measured once without a bus. The first row,"
        + " in bold, is the headline's set-up.\n"
    )


def readme(result: dict[str, Any]) -> str:
    """The README's tables: every scenario in the tuned set-up, a column per
    implementation, then S1-S3 in every logging set-up."""
    records = result["results"]
    columns = list(IMPLEMENTATIONS)
    lines = [
        _md_row(["", *[impl.label for impl in columns]]),
        "|---|" + "---:|" * len(columns),
    ]
    for each in SCENARIOS:
        if each.not_available:
            lines.append(_md_row([each.id, "not available yet", *[""] * (len(columns) - 1)]))
            continue
        for variant in each.variants or (None,):
            cells = []
            for impl in columns:
                found = _find(records, each.id, impl.id, None if impl.floor else variant)
                cells.append(_ns(found["median_ns"]) if found else "n/a")
            label = each.id
            if variant:
                label += f", {VARIANT_LABELS.get(variant, variant)}"
            lines.append(_md_row([label, *cells]))
    summary = ", ".join(f"{t.get('short', t['target'])} {t['status']}" for t in result["targets"])
    floors = {impl.mode: impl for impl in columns if impl.floor}
    renamed = "".join(
        f" In {each.id}, "
        + ", ".join(f"{floors[mode].label} is {label}" for mode, label in each.floor_labels)
        + "."
        for each in SCENARIOS
        if each.floor_labels and not each.not_available
    )
    return (
        "\n".join(lines)
        + "\n\nMedian ns per operation (n/a: see the full table), in the tuned"
        + " set-up: structlog filters out everything, so that messagebus logs"
        + f" nothing, as the peers.{renamed}\n\n"
        + setups(result)
        + f"\nTargets: {summary}.\n\nMeasured on: {machine_line(result)}.\n"
    )
