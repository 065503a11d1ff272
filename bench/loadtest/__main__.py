"""`python -m bench.loadtest`: run the load test, print the table, write the JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from bench.loadtest import ROOT
from bench.loadtest.phases import run_test
from bench.loadtest.report import render


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.loadtest",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    ap.add_argument("--watches", type=int, default=200,
                    help="concurrent WatchRun streams in all (default 200)")
    ap.add_argument("--creates", type=int, default=1000,
                    help="CreateRun calls in all (default 1000)")
    ap.add_argument("--runs", type=int, default=4,
                    help="measured simulations per phase (default 4)")
    ap.add_argument("--get-interval", type=float, default=0.01,
                    help="seconds between two GetRun calls of a client (default 0.01)")
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="skip the control phase (the runs again with the RPC CPU merely "
                         "busy)")
    ap.add_argument("--json", default=str(ROOT / "out" / "loadtest.json"),
                    help="write the figures here (default out/loadtest.json)")
    args = ap.parse_args(argv)
    for name in ("clients", "watches", "creates", "runs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    if args.watches < args.clients:
        ap.error("--watches must be at least --clients (each client holds some)")
    if args.get_interval < 0:
        ap.error("--get-interval must be >= 0")
    fig = run_test(args)
    render(fig)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**dataclasses.asdict(fig), "verdicts": fig.verdicts(),
                               "nothing_lost": fig.nothing_lost}, indent=2))
    print(f"figures written to {out}", file=sys.stderr)
    return 0 if all(fig.verdicts().values()) else 1


if __name__ == "__main__":
    sys.exit(main())
