"""Memory: resident bytes per simulated 4 KiB page at 1, 16 and 64 GiB.

Each size runs in a fresh interpreter (`python -m bench.memory --child SIZE`), so no
size inherits another's heap. The child imports everything a run needs, reads its
resident set (the interpreter + imports baseline), runs a short churn
(`bench.workloads.fixed_spec`, 0.5 simulated seconds, live set ~90 Ki pages) through
`sim.run.run` while keeping the machine alive, and reads it again. The figure is
(RSS after - baseline) / simulated pages, against the goal of 16 bytes; the peak
(VmHWM) is reported too, and for 64 GiB the whole process's peak is held to the
2 GiB goal. `MemMap.bytes_per_page()` (the page arrays alone) is printed beside it, and
the marginal cost (the RSS difference between 1 and 64 GiB over their page-count
difference), which the run's fixed overheads (~4 MiB: rng buffers, summary) do not blur.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import Row

SIZES = ("1GiB", "16GiB", "64GiB")
CHURN_S = 0.5
GOAL_BYTES_PER_PAGE = 16
GOAL_64G_BYTES = 2 << 30
ROOT = Path(__file__).resolve().parent.parent


def _peak_rss_bytes() -> int:
    """This process's resident high-water mark (VmHWM). Not ru_maxrss: Linux carries the
    parent's maximum across fork and exec into it."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(size: str) -> dict:
    """Measure one size in this (fresh) process."""
    import gc

    import numpy.random

    # numpy.random loads lazily on the first generator (~7 MiB of extension modules):
    # part of the interpreter + imports baseline, not of the simulated pages.
    numpy.random.default_rng(0).random(16)

    from bench import workloads as wl
    from bench.harness import instrumented_run, rss_bytes

    cfg = wl.config(wl.fixed_spec(size, duration=CHURN_S))
    gc.collect()
    base, base_peak = rss_bytes(), _peak_rss_bytes()
    result, probe = instrumented_run(cfg)     # both kept alive: they are the run's memory
    gc.collect()
    after, peak = rss_bytes(), _peak_rss_bytes()
    m = probe.machine
    pages = m.mem.nr_pages
    return {"size": size, "pages": pages, "base_rss": base, "base_peak": base_peak,
            "built_rss": probe.rss_built, "after_rss": after, "peak_rss": peak,
            "memmap_bytes_per_page": m.mem.bytes_per_page(),
            "build_s": probe.build_s, "allocs": probe.steps[-1].allocs,
            "frees": probe.steps[-1].frees,
            "live_pages": round(probe.steps[-1].in_use * m.managed_pages),
            "events_scheduled": result.events_scheduled}


def run_child(size: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.memory", "--child", size], cwd=ROOT,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rows_for(r: dict) -> list[Row]:
    pages = r["pages"]
    per_page = (r["after_rss"] - r["base_rss"]) / pages
    built = (r["built_rss"] - r["base_rss"]) / pages
    peak = (r["peak_rss"] - r["base_rss"]) / pages
    mib = 1 << 20
    rows = [Row(f"memory.{r['size']}", per_page, "bytes/page", per_page / GOAL_BYTES_PER_PAGE,
                f"<= {GOAL_BYTES_PER_PAGE} B/page", per_page <= GOAL_BYTES_PER_PAGE,
                note=f"{pages:,} pages; RSS delta {(r['after_rss'] - r['base_rss']) / mib:.0f} MiB "
                     f"after {CHURN_S} sim s churn ({r['allocs']:,} allocs, "
                     f"~{r['live_pages']:,} live pages), {built:.2f} B/page right after build, "
                     f"peak {peak:.2f} B/page; MemMap.bytes_per_page() "
                     f"{r['memmap_bytes_per_page']:.3f}; baseline RSS "
                     f"{r['base_rss'] / mib:.0f} MiB; build {r['build_s']:.2f} s")]
    if r["size"] == "64GiB":
        rows.append(Row("memory.64GiB.peak_rss", r["peak_rss"] / mib, "MiB",
                        r["peak_rss"] / GOAL_64G_BYTES, "<= 2048 MiB",
                        r["peak_rss"] <= GOAL_64G_BYTES,
                        note=f"whole process peak (VmHWM); resident after the run "
                             f"{r['after_rss'] / mib:.0f} MiB"))
    return rows


def marginal_row(small: dict, large: dict) -> Row:
    """Bytes per extra page between two sizes: what the fixed overheads do not blur."""
    slope = (large["after_rss"] - small["after_rss"]) / (large["pages"] - small["pages"])
    return Row("memory.marginal", slope, "bytes/page", slope / GOAL_BYTES_PER_PAGE,
               f"<= {GOAL_BYTES_PER_PAGE} B/page", slope <= GOAL_BYTES_PER_PAGE,
               note=f"(RSS after at {large['size']} - at {small['size']}) / (their page-count "
                    f"difference): the per-page cost without the run's fixed overheads")


def main(floor: float | None = None) -> list[Row]:
    rows = []
    results = [run_child(size) for size in SIZES]
    for r in results:
        rows += rows_for(r)
    rows.append(marginal_row(results[0], results[-1]))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
    else:
        sys.exit("usage: python -m bench.memory --child SIZE (or python -m bench memory)")
