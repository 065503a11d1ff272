"""Latency histograms in simulated time.

Log-linear buckets (8 per power of two, from 1 ns to ~10^5 s) hold counts in a numpy
array, so recording is O(1) and memory is fixed whatever the number of samples.
Percentiles are read from the bucket upper bounds (at most 9 % above the true value).
"""

from __future__ import annotations

import math

import numpy as np

SUB = 8                      # buckets per power of two
NBUCKETS = 48 * SUB          # 2^0 .. 2^48 ns
_UPPER_NS = np.array([2.0 ** ((i + 1) / SUB) for i in range(NBUCKETS)])


def _bucket(ns: float) -> int:
    if ns < 1.0:
        return 0
    b = int(math.log2(ns) * SUB)
    return b if b < NBUCKETS else NBUCKETS - 1


class Histogram:
    """Counts of durations (seconds in, ns buckets inside)."""

    __slots__ = ("counts", "n", "total_s", "max_s")

    def __init__(self) -> None:
        self.counts = np.zeros(NBUCKETS, dtype=np.int64)
        self.n = 0
        self.total_s = 0.0
        self.max_s = 0.0

    def record(self, seconds: float) -> None:
        self.counts[_bucket(seconds * 1e9)] += 1
        self.n += 1
        self.total_s += seconds
        if seconds > self.max_s:
            self.max_s = seconds

    def merge(self, other: "Histogram") -> None:
        self.counts += other.counts
        self.n += other.n
        self.total_s += other.total_s
        self.max_s = max(self.max_s, other.max_s)

    def percentile(self, q: float) -> float:
        """Seconds below which a share `q` (0..1) of samples lie (bucket upper bound)."""
        if self.n == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.n))
        idx = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(float(_UPPER_NS[idx]) * 1e-9, self.max_s)

    def mean(self) -> float:
        return self.total_s / self.n if self.n else 0.0

    def summary(self) -> dict[str, float]:
        return {"count": self.n, "mean_us": self.mean() * 1e6,
                "p50_us": self.percentile(0.5) * 1e6, "p90_us": self.percentile(0.9) * 1e6,
                "p99_us": self.percentile(0.99) * 1e6, "max_us": self.max_s * 1e6}

    def buckets(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, count) for every non-empty bucket."""
        idx = np.nonzero(self.counts)[0]
        return [(float(_UPPER_NS[i]) * 1e-9, int(self.counts[i])) for i in idx]
