"""Runs the jobs: every (scenario, variant, implementation), round after round.

Each job runs in a fresh process (the implementation's environment), once per
round; a round runs every job once, in a shuffled order, so that a slow spell
of a shared machine falls on all implementations alike and ratios stay
comparable. A job that is n/a, not available yet or failed in the first round
is not run again.

Every process also times a reference loop (``bench/_reference.py``), which
the report uses to correct for a machine slowed down by its neighbours.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._catalogue import IMPLEMENTATIONS, SCENARIOS, Implementation, Scenario
from bench._venvs import ROOT, EnvironmentUnavailable, ensure

JOB_TIMEOUT_S = 600


@dataclass
class Job:
    scenario: Scenario
    variant: str | None
    impl: Implementation
    status: str = "pending"
    reason: str | None = None
    round_ns: list[float] = field(default_factory=list)
    repeat_ns: list[list[float]] = field(default_factory=list)
    number: list[int] = field(default_factory=list)
    round_reference_ns: list[float] = field(default_factory=list)
    #: Bytes written to stdout and stderr per timed operation, each round.
    output_bytes_per_op: list[float] = field(default_factory=list)
    note: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        variant = f"[{self.variant}]" if self.variant else ""
        return f"{self.scenario.id}{variant} {self.scenario.label_of(self.impl)}"

    def stop(self, status: str, reason: str | None) -> None:
        self.status, self.reason = status, reason


def plan(scenario_ids: set[str] | None, impl_ids: set[str] | None) -> list[Job]:
    """Every job to run; a floor runs once per scenario, not per variant, and
    only the buses run the logging set-ups (``Scenario.variants_of``)."""
    jobs: list[Job] = []
    for scenario in SCENARIOS:
        if scenario_ids and scenario.id not in scenario_ids:
            continue
        if scenario.not_available:
            continue
        for impl in IMPLEMENTATIONS:
            if impl_ids and impl.id not in impl_ids and not impl.floor:
                continue
            jobs.extend(Job(scenario, variant, impl) for variant in scenario.variants_of(impl))
    return jobs


def interpreters(jobs: list[Job], install: bool, log: Callable[[str], None]) -> dict[str, Path]:
    """The Python of each environment the jobs need; jobs of a missing one become n/a."""
    found: dict[str, Path] = {"main": Path(sys.executable)}
    for env in sorted({job.impl.env for job in jobs} - {"main"}):
        try:
            if install:
                found[env] = ensure(env, log)
            else:
                from bench._venvs import python_of

                if not python_of(env).exists():
                    raise EnvironmentUnavailable(f"bench/.venvs/{env} is missing (--no-install)")
                found[env] = python_of(env)
        except EnvironmentUnavailable as exc:
            for job in jobs:
                if job.impl.env == env:
                    job.stop("n/a", f"could not be installed: {exc}")
    return found


def run_once(job: Job, python: Path, repeats: int, target: float) -> dict[str, Any]:
    request = {
        "module": job.impl.module,
        "scenario": job.scenario.id,
        "variant": job.variant,
        "repeats": repeats,
        "target": target,
    }
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # The same hash seed in every process: dict and set layouts do not differ between rounds.
    environment["PYTHONHASHSEED"] = "0"
    try:
        done = subprocess.run(
            [str(python), "-m", "bench._worker", json.dumps(request)],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {JOB_TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    try:
        return dict(json.loads(lines[-1]))
    except (IndexError, ValueError):
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        return {"status": "failed", "reason": f"worker exited {done.returncode}: {tail}"}


def run(
    jobs: list[Job],
    pythons: dict[str, Path],
    rounds: int,
    repeats: int,
    target: float,
    log: Callable[[str], None],
) -> None:
    for round_number in range(1, rounds + 1):
        order = [job for job in jobs if job.status in ("pending", "ok")]
        random.Random(round_number).shuffle(order)
        for index, job in enumerate(order, 1):
            if job.status not in ("pending", "ok"):  # stopped earlier in this round
                continue
            started = time.perf_counter()
            result = run_once(job, pythons[job.impl.env], repeats, target)
            elapsed = time.perf_counter() - started
            job.versions.update(result.get("versions") or {})
            prefix = (
                f"round {round_number}/{rounds} [{index:>2}/{len(order)}]"
                f" ({elapsed:4.1f} s) {job.name}"
            )
            if result["status"] != "ok":
                job.stop(result["status"], result.get("reason"))
                log(f"{prefix}: {job.status}: {job.reason}")
                if result.get("traceback"):
                    log(result["traceback"].rstrip())
                _stop_other_variants(jobs, job)
                continue
            job.status = "ok"
            job.note = result.get("note")
            job.repeat_ns.append(result["repeat_ns"])
            job.number.append(result["number"])
            job.round_ns.append(statistics.median(result["repeat_ns"]))
            job.round_reference_ns.append(result["reference_ns"])
            job.output_bytes_per_op.append(result.get("output_bytes_per_op", 0.0))
            log(
                f"{prefix}: {job.round_ns[-1]:,.0f} ns/op"
                f" (reference loop {result['reference_ns']:.0f} ns)"
            )


def _stop_other_variants(jobs: list[Job], stopped: Job) -> None:
    """What an implementation lacks for one variant of a scenario, it lacks for all."""
    if stopped.status not in ("n/a", "not available yet"):
        return
    for job in jobs:
        if (
            job is not stopped
            and job.impl is stopped.impl
            and job.scenario is stopped.scenario
            and job.status == "pending"
        ):
            job.stop(stopped.status, stopped.reason)
