"""The command line: ``python -m bench [--quick] [--only S1,S3] [--impl lato] ...``.

A full run (no filter, not quick) writes ``bench/results/latest.json``; any
other writes ``bench/results/<quick|partial>.json.tmp`` (git-ignored), so the
committed result is always a complete one. ``--show`` prints a saved result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import _machine, _report, _runner
from bench._catalogue import IMPLEMENTATIONS, SCENARIOS
from bench._reference import best_reference_ns
from bench._venvs import ROOT

RESULTS = ROOT / "bench" / "results"
LATEST = RESULTS / "latest.json"

FULL: dict[str, float] = {"rounds": 5, "repeats": 15, "target": 0.02}
QUICK: dict[str, float] = {"rounds": 1, "repeats": 5, "target": 0.004}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ids(text: str | None, known: list[str], what: str) -> set[str] | None:
    if not text:
        return None
    ids = {item.strip() for item in text.split(",") if item.strip()}
    unknown = ids - set(known)
    if unknown:
        raise SystemExit(
            f"unknown {what}: {', '.join(sorted(unknown))} (known: {', '.join(known)})"
        )
    return ids


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of messagebus against a direct call and peer libraries.",
    )
    p.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about a minute)")
    p.add_argument("--rounds", type=int, help="processes per job (full: 5, quick: 1)")
    p.add_argument("--repeats", type=int, help="timeit repeats per process (full: 15, quick: 5)")
    p.add_argument("--target", type=float, help="seconds per repeat (full: 0.02, quick: 0.004)")
    p.add_argument("--only", metavar="S1,S3", help="run these scenarios only")
    p.add_argument(
        "--impl", metavar="ID,...", help="run these implementations only (and the floors)"
    )
    p.add_argument("--no-install", action="store_true", help="do not make missing environments")
    p.add_argument("--output", type=Path, help="where to write the JSON result")
    p.add_argument("--markdown", action="store_true", help="print Markdown instead of text")
    p.add_argument(
        "--readme",
        action="store_true",
        help="print the README's compact table (of this run; with --show, of a saved one)",
    )
    p.add_argument(
        "--show",
        nargs="?",
        const=LATEST,
        type=Path,
        metavar="JSON",
        help="print a saved result (default: bench/results/latest.json), its ratios and "
        "targets computed again from its times, and run nothing",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.show:
        saved = json.loads(args.show.read_text(encoding="utf-8"))
        print(_render(_report.refresh(saved), args))
        return 0

    settings = dict(QUICK if args.quick else FULL)
    for key in ("rounds", "repeats", "target"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    scenario_ids = _ids(args.only, [s.id for s in SCENARIOS], "scenarios")
    impl_ids = _ids(args.impl, [i.id for i in IMPLEMENTATIONS], "implementations")
    complete = not (
        args.quick or scenario_ids or impl_ids or args.rounds or args.repeats or args.target
    )

    started = time.time()
    machine = _machine.describe()
    jobs = _runner.plan(scenario_ids, impl_ids)
    pythons = _runner.interpreters(jobs, install=not args.no_install, log=_log)
    probe = best_reference_ns()
    _log(f"reference loop: {probe:.0f} ns per iteration at best, here and now")
    rounds, repeats, target = int(settings["rounds"]), int(settings["repeats"]), settings["target"]
    _runner.run(jobs, pythons, rounds, repeats, target, _log)
    reference = min([probe, *(r for job in jobs for r in job.round_reference_ns)])

    records = _report.rows(jobs, reference)
    result: dict[str, Any] = {
        "schema": 1,
        "run": {
            "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "duration_s": round(time.time() - started, 1),
            "quick": args.quick,
            "complete": complete,
            "rounds": rounds,
            "repeats": repeats,
            "target_s": target,
            "reference_ns": round(reference, 1),
            "load_average_at_end": _machine.load_average(),
            "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        },
        "machine": machine,
        "versions": _versions(jobs),
        "scenarios": [
            {
                "id": s.id,
                "title": s.title,
                "variants": list(s.variants),
                "not_available": s.not_available,
            }
            for s in SCENARIOS
        ],
        "results": records,
        "targets": _report.targets(records),
        "logged_attempt_us": _report.logged_attempt_us(records),
    }
    output = args.output or (
        LATEST if complete else RESULTS / f"{'quick' if args.quick else 'partial'}.json.tmp"
    )
    _write(output, result)
    print(_render(result, args))
    _log(f"written to {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 0


def _render(result: dict[str, Any], args: argparse.Namespace) -> str:
    if args.readme:
        return _report.readme(result)
    return _report.markdown(result) if args.markdown else _report.text(result)


def _versions(jobs: list[_runner.Job]) -> dict[str, str]:
    versions: dict[str, str] = {}
    for job in jobs:
        versions.update(job.versions)
    return dict(sorted(versions.items()))


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp") if not path.name.endswith(".tmp") else path
    partial.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if partial != path:
        os.replace(partial, path)
