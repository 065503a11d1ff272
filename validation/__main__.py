"""`python -m validation [CHECK ...] [--workers N] [--out PATH]`: run the checks, write
the document, print the summary. The whole suite writes docs/validation.md; a subset
of checks writes out/validation.md unless --out says otherwise, so the committed
document always lists every check.

Exit status 0 when every check could be run (departures are findings, not errors), 1
when a run or a measurement failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from validation import checks
from validation.model import Outcome, evaluate
from validation.report import render, render_summary
from validation.runner import run_all

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "validation.md"
SUBSET_OUT = ROOT / "out" / "validation.md"


def outcomes_of(selected, done) -> list[Outcome]:
    out = []
    for check in selected:
        failed = {job: done[job] for job in check.jobs() if isinstance(done[job], str)}
        if failed:
            (job, error), *_ = failed.items()
            out.append(Outcome(check, (), {}, (), f"{job[0]} {' '.join(job[1])} seed "
                                                   f"{job[2]}: {error}"))
            continue
        results = {name: [done[arm.job(seed)] for seed in check.seeds]
                   for name, arm in check.arms.items()}
        out.append(evaluate(check, results))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validation", description=__doc__)
    ap.add_argument("names", nargs="*", metavar="CHECK",
                    help="checks to run (default: all): "
                         + ", ".join(c.name for c in checks.CHECKS))
    ap.add_argument("--workers", type=int, default=2, help="simulations at a time (2)")
    ap.add_argument("--out", type=Path, default=None,
                    help="the document to write (default: docs/validation.md for the "
                         "whole suite, out/validation.md for a subset)")
    args = ap.parse_args(argv)
    try:
        selected = checks.by_name(args.names)
    except ValueError as exc:
        ap.error(str(exc))
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    t0 = time.perf_counter()
    done = run_all([job for c in selected for job in c.jobs()], workers=args.workers)
    outcomes = outcomes_of(selected, done)
    out = args.out or (SUBSET_OUT if args.names else DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(outcomes))
    print(render_summary(outcomes))
    print(f"wrote {out}; {len(done)} runs in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())

