"""The specs the benchmarks share: an order-0 anon/file churn that stays clear of the
watermarks.

Two groups of four tasks (one per CPU): anonymous faults 16 pages per request (a 64 KiB
fault-around) and page cache 32 pages per request (the 128 KiB default readahead), at
200,000 pages per second each, so 400,000 allocations per simulated second, and as many
frees once the live set is steady. In-use memory at steady state is rate x mean lifetime:

- `churn_spec` (16 GiB): fill to half of memory first, lifetimes of 5 s, so the live set
  stays near 2 Mi pages (48 % of 16 GiB) with free memory far above the LOW watermark;
- `fixed_spec` (any size): no fill, lifetimes of 0.25 s, so the live set is 100 Ki pages
  (40 % of 1 GiB, 0.6 % of 64 GiB): the same work whatever the machine size.
"""

from __future__ import annotations

from typing import Any

from compactsim.sim.config import SimConfig, config_from_dict

PAGES_PER_S = 200_000          # per group
TASKS = 4
ANON_BATCH = 16
FILE_BATCH = 32

CHURN_MEMORY = "16GiB"
CHURN_FILL = 0.5
CHURN_LIFETIME_S = 5.0
CHURN_DURATION_S = 3.0
CHURN_WARMUP_S = 0.5           # the fill is done by then (checked: in-use >= 45 %)

FIXED_LIFETIME_S = 0.25        # live set 100 Ki pages
FIXED_DURATION_S = 2.0
FIXED_WARMUP_S = 1.0           # four mean lifetimes: the live set is steady


def _groups(pattern: str, lifetime_s: float, fill: float | None = None) -> list[dict[str, Any]]:
    groups = []
    for name, kind, batch in (("anon", "anon", ANON_BATCH), ("file", "file", FILE_BATCH)):
        g = {"name": name, "kind": kind, "tasks": TASKS, "pattern": pattern,
             "rate": PAGES_PER_S / TASKS / batch, "batch": batch,
             "lifetime": {"distribution": "exponential", "mean": lifetime_s}}
        if fill is not None:
            g["fill_fraction"] = fill
        groups.append(g)
    return groups


def churn_spec(memory: str = CHURN_MEMORY, duration: float = CHURN_DURATION_S) -> dict[str, Any]:
    return {"seed": 1, "duration": duration, "machine": {"memory": memory, "cpus": TASKS},
            "workload": _groups("fill", CHURN_LIFETIME_S, CHURN_FILL)}


def fixed_spec(memory: str, duration: float = FIXED_DURATION_S) -> dict[str, Any]:
    return {"seed": 1, "duration": duration, "machine": {"memory": memory, "cpus": TASKS},
            "workload": _groups("poisson", FIXED_LIFETIME_S)}


def config(spec: dict[str, Any]) -> SimConfig:
    return config_from_dict(spec)
