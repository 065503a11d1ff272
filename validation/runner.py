"""Run the checks' experiments: every (scenario, overrides, seed) once, in worker processes.

A run goes through the real entry point, `compactsim.sim.run.run`, on the preset spec
with the arm's overrides and the seed. The machine it builds is kept (`run`'s
`on_machine`) so the pageblock census can read it after the run;
only the figures (`measure.figures`) travel back. Runs are independent and each is a
pure function of its spec and seed, so the figures do not depend on the number of
workers or on the order in which runs finish.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
import time
from collections.abc import Iterable

import compactsim.sim.run as sim_run
from compactsim.sim.config import apply_overrides, config_from_dict
from compactsim.sim.scenarios import load_scenario
from validation.measure import figures

Job = tuple[str, tuple[str, ...], int]

# Every run keeps its extfrag lines: the ring buffer is made large enough for the
# fallbacks of the presets (lines lost to it are counted in `trace_lines_lost`).
RUN_OVERRIDES = ("sampling.trace_buffer=2000000",)


def config_of(job: Job):
    scenario, overrides, seed = job
    raw = apply_overrides(load_scenario(scenario),
                          [*RUN_OVERRIDES, *overrides, f"seed={seed}"])
    return config_from_dict(raw)


def run_job(job: Job) -> tuple[Job, dict[str, float] | str, float]:
    """One run's figures, or the error it raised; with its wall time."""
    t0 = time.perf_counter()
    try:
        kept: list = []
        result = sim_run.run(config_of(job), on_machine=kept.append)
        out: dict[str, float] | str = figures(result, kept[-1])
    except Exception as exc:           # reported per check, the suite goes on
        out = f"{type(exc).__name__}: {exc}"
    return job, out, time.perf_counter() - t0


def run_all(jobs: Iterable[Job], workers: int = 2, log=sys.stderr
            ) -> dict[Job, dict[str, float] | str]:
    """Figures of every distinct job (or its error), `workers` runs at a time."""
    todo = sorted(set(jobs), key=repr)
    done: dict[Job, dict[str, float] | str] = {}

    def record(i: int, job: Job, out: dict[str, float] | str, wall: float) -> None:
        done[job] = out
        status = "error: " + out if isinstance(out, str) else "ok"
        print(f"[{i}/{len(todo)}] {job[0]} {' '.join(job[1])} seed={job[2]}: "
              f"{wall:.1f} s {status}", file=log, flush=True)

    if workers <= 1:
        for i, outcome in enumerate(map(run_job, todo), 1):
            record(i, *outcome)
        return done
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, job) for job in todo]
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            record(i, *future.result())
    return done
