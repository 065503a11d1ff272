"""Latency histograms in simulated time.

Log-linear buckets (8 per power of two, from 1 ns to ~10^5 s) hold counts in a fixed
list, so recording is O(1) and memory is fixed whatever the number of samples; numpy is
used only when reading.
Percentiles are read from the bucket upper bounds (at most 9 % above the true value).
"""

from __future__ import annotations

import math

import cython
import numpy as np

SUB = 8                      # buckets per power of two
NBUCKETS = 48 * SUB          # 2^0 .. 2^48 ns
_UPPER_NS = np.array([2.0 ** ((i + 1) / SUB) for i in range(NBUCKETS)])


def _bucket(ns: float) -> int:
    if ns < 1.0:
        return 0
    b = int(math.log2(ns) * SUB)
    return b if b < NBUCKETS else NBUCKETS - 1


@cython.cclass
class Histogram:
    """Counts of durations (seconds in, ns buckets inside)."""


    def __init__(self) -> None:
        self._counts = [0] * NBUCKETS
        self.n = 0
        self.total_s = 0.0
        self.max_s = 0.0
        self._last = -1.0          # many samples repeat one value (per-cpu list hits)
        self._last_bucket = 0

    @property
    def counts(self) -> np.ndarray:
        return np.array(self._counts, dtype=np.int64)

    def record(self, seconds: float, n: int = 1) -> None:
        """Add `n` samples of `seconds`."""
        if seconds == self._last:
            b = self._last_bucket
        else:
            b = self._last_bucket = _bucket(seconds * 1e9)
            self._last = seconds
        self._counts[b] += n
        self.n += n
        self.total_s += seconds * n
        if seconds > self.max_s:
            self.max_s = seconds

    def merge(self, other: "Histogram") -> None:
        self._counts = [a + b for a, b in zip(self._counts, other._counts)]
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
