"""A run's results directory (`simulate --out`, `report --out`): summary JSON, the
effective spec, time series CSV, procfs files and the trace; written by `write_results`,
read back by `read_results` (for `compare` and `plot`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from compactsim.sim.config import config_to_dict

if TYPE_CHECKING:
    from compactsim.sim.run import RunResult


def write_results(result: RunResult, out: Path) -> list[Path]:
    """Write everything a run produced under `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name: str, text: str) -> None:
        path = out / name
        path.write_text(text)
        written.append(path)

    put("summary.json", json.dumps(result.summary, indent=2, sort_keys=True) + "\n")
    put("spec.json", json.dumps(config_to_dict(result.config), indent=2) + "\n")
    if result.series:
        path = out / "series.csv"
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(result.series[0]))
            writer.writeheader()
            writer.writerows(result.series)
        written.append(path)
    proc = out / "proc"
    proc.mkdir(exist_ok=True)
    for name, text in result.files.items():
        path = proc / name
        path.write_text(text)
        written.append(path)
    if result.trace:
        put("trace.txt", result.trace)
    if result.fault_log:
        put("thp-faults.txt", result.fault_log)
    return written


def read_results(path: Path) -> tuple[dict, dict, list[dict]]:
    """(spec, summary, series rows) of a results directory."""
    spec = json.loads((path / "spec.json").read_text())
    summary = json.loads((path / "summary.json").read_text())
    rows = []
    series = path / "series.csv"
    if series.exists():
        with series.open() as fh:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return spec, summary, rows
