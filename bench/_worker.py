"""Times one scenario of one implementation, in a process of its own.

Run by the orchestrator as ``python -m bench._worker '<json>'`` with the
interpreter of the implementation's environment; prints one line of JSON.
Standard library only, like everything it imports from ``bench``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench._api import Case, NotApplicable
from bench._reference import reference_ns

# CPU time of the process, not wall time: on a shared machine, the time spent
# waiting for a core is not the code's (time spent sharing one, with a busy
# hyperthread or a cold cache, still is: hence rounds and medians).
_clock = time.process_time

# As timeit does: the statement is compiled into the loop, not called through a function.
_SYNC_TEMPLATE = """
def _bench_run(_n, _repeat=_repeat):
    for _ in _repeat(None, _n):
{body}
"""
_ASYNC_TEMPLATE = """
async def _bench_run(_n, _repeat=_repeat):
    for _ in _repeat(None, _n):
{body}
"""


def _compile(case: Case, template: str) -> Callable[[int], Any]:
    body = "\n".join("        " + line for line in case.stmt.strip("\n").splitlines())
    namespace = case.namespace
    namespace["_repeat"] = itertools.repeat
    exec(compile(template.format(body=body), "<bench>", "exec"), namespace)
    return namespace["_bench_run"]  # type: ignore[no-any-return]


def _timer(case: Case) -> tuple[Callable[[int], float], int]:
    """A function that runs ``number`` repetitions and returns seconds, and ops per repetition."""
    if case.kind == "sync":
        run = _compile(case, _SYNC_TEMPLATE)

        def timed(number: int) -> float:
            started = _clock()
            run(number)
            return _clock() - started

        return timed, 1

    if case.kind == "async":
        run_async = _compile(case, _ASYNC_TEMPLATE)
        loop = case.loop if case.loop is not None else asyncio.new_event_loop()
        case.loop = loop

        def timed_async(number: int) -> float:
            coroutine = run_async(number)
            started = _clock()
            loop.run_until_complete(coroutine)
            return _clock() - started

        return timed_async, 1

    run_threaded = _compile(case, _SYNC_TEMPLATE)
    threads = case.threads

    def timed_threads(number: int) -> float:
        barrier = threading.Barrier(threads + 1)
        errors: list[BaseException] = []

        def work() -> None:
            barrier.wait()
            try:
                run_threaded(number)
            except BaseException as exc:  # reported, not swallowed
                errors.append(exc)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        barrier.wait()
        started = _clock()
        for worker in workers:
            worker.join()
        elapsed = _clock() - started
        if errors:
            raise errors[0]
        return elapsed

    return timed_threads, threads


def _measure(case: Case, target: float, repeats: int) -> dict[str, Any]:
    timed, ops_per_number = _timer(case)
    target = max(target, case.min_target)
    if case.kind == "threads":
        # Each thread must run for several of the interpreter's switch intervals
        # (5 ms by default), or the threads would take turns instead of sharing
        # the bus; fewer, longer repeats keep the time spent the same.
        slices = max(1.0, target / 0.005)
        target = case.threads * sys.getswitchinterval() * slices
        repeats = max(3, repeats // 3)
    ops = 0

    def run(number: int) -> float:
        nonlocal ops
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()  # as timeit does
        try:
            elapsed = timed(number)
        finally:
            if enabled:
                gc.enable()
        ops += number * ops_per_number
        return elapsed

    before = case.tally.read() if case.tally is not None else 0
    # Calibrate as timeit.autorange does (1, 2, 5, 10, 20, ...), then scale to the target.
    number = 1
    for scale in itertools.cycle((2, 2.5, 2)):
        elapsed = run(number)
        if elapsed >= target / 5:
            break
        number = int(number * scale)
    number = max(1, round(number * target / max(elapsed, 1e-9)))
    per_op_ns = []
    reference = [reference_ns()]
    for _ in range(repeats):
        per_op_ns.append(run(number) / (number * ops_per_number) * 1e9)
        reference.append(reference_ns())
    if case.tally is not None:
        calls = case.tally.read() - before - 1
        if calls != ops * case.calls_per_op:
            raise RuntimeError(
                f"handlers were called {calls} times for {ops} operations; "
                f"expected {case.calls_per_op} calls per operation"
            )
    return {
        "repeat_ns": per_op_ns,
        "reference_ns": statistics.median(reference),
        "number": number,
        "ops": ops,
    }


def run_job(job: dict[str, Any], written: Callable[[], int] = lambda: 0) -> dict[str, Any]:
    """Set up and time one job; the result is always a JSON-safe dict.

    ``written`` tells how many bytes the process has written to its stdout and
    stderr so far: the result says how many a timed operation wrote.
    """
    module = importlib.import_module(f"bench.impls.{job['module']}")
    try:
        case: Case = module.setup(job["scenario"], job.get("variant"))
    except NotApplicable as exc:
        return {"status": exc.status, "reason": str(exc), "versions": module.versions()}
    try:
        if case.check is not None:
            case.check()
        before = written()
        result = _measure(case, job["target"], job["repeats"])
        result["output_bytes_per_op"] = (written() - before) / result["ops"]
    finally:
        if case.teardown is not None:
            case.teardown()
    result.update(status="ok", note=case.note, versions=module.versions())
    return result


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        # A stream the job closed has nothing left to flush.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    # What the job writes to stdout or stderr (a bus with nothing configured
    # logs there) goes to a temporary file: never to the terminal, nor into the
    # pipe the result is read from; a logging set-up is timed writing to a
    # file, as an application's would, and its bytes are counted.
    _flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as output:

        def written() -> int:
            _flush()
            return os.fstat(output.fileno()).st_size

        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        try:
            result = run_job(job, written)
        except BaseException as exc:
            lines = traceback.format_exception_only(type(exc), exc)
            result = {
                "status": "failed",
                "reason": lines[-1].strip(),
                "traceback": traceback.format_exc(),
            }
        finally:
            _flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
