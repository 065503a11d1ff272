"""`python -m bench [NAME ...] [--profile] [--json PATH]`: run benchmarks, print one table.

The floor is always measured first (the other speed figures are ratios to it). Exit
status is 0 whatever the verdicts: these are measurements, not tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

from bench import churn, compaction, floor, memory, presets, render_table, scaling, sweep

BENCHMARKS = {"floor": floor.main, "churn": churn.main, "memory": memory.main,
              "scaling": scaling.main, "compaction": compaction.main,
              "presets": presets.main, "sweep": sweep.main}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"benchmarks to run ({', '.join(BENCHMARKS)}); default: all")
    ap.add_argument("--profile", action="store_true",
                    help="also print a cProfile of the churn run (top 15 by tottime)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark {', '.join(unknown)} (choose from {', '.join(BENCHMARKS)})")

    t0 = time.perf_counter()
    header = (f"python {platform.python_version()} on {platform.machine()}, "
              f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at start")
    print(header, file=sys.stderr)
    print("floor ...", file=sys.stderr, flush=True)
    floor_value, rows = floor.measure()
    rows = list(rows) if "floor" in names else rows[:1]
    for name in names:
        if name == "floor":
            continue
        print(f"{name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        rows += BENCHMARKS[name](floor_value)
        print(f"{name} done in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    print(render_table(rows))
    print(f"\n{header}, {os.getloadavg()[0]:.2f} at end; total {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=2)
    if args.profile:
        print(churn.profile())
    return 0


if __name__ == "__main__":
    sys.exit(main())
