"""Per-seed values of an expectation, built from the arms' per-run figures.

Arms compared with each other run on the same seeds, so a change is taken seed by seed
(paired) and its spread is the spread over seeds. `welch_p` gives the two-sided p-value
of Welch's t-test between two arms' raw figures, to say whether a direction is more
than noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from scipy import stats as sps

from validation.model import Results


def figures(results: Results, arm: str, key: str) -> np.ndarray:
    """The figure `key` of every run of `arm` (NaN where a run lacks it)."""
    return np.array([run.get(key, math.nan) for run in results[arm]], dtype=float)


def level(arm: str, key: str, scale: float = 1.0) -> Callable[[Results], np.ndarray]:
    """The figure itself, per seed (times `scale`, e.g. 100 for a percentage)."""
    return lambda results: figures(results, arm, key) * scale


@dataclasses.dataclass(frozen=True)
class Paired:
    """Arm `new` against arm `base` on figure `key`, seed by seed: the relative change in
    percent (`kind` "change") or the quotient (`kind` "ratio")."""

    base: str
    new: str
    key: str
    kind: str

    def __call__(self, results: Results) -> np.ndarray:
        a, b = figures(results, self.base, self.key), figures(results, self.new, self.key)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.kind == "change":
                return np.where(a != 0, 100.0 * (b - a) / a, math.nan)
            return np.where(a != 0, b / a, math.nan)

    def p_value(self, results: Results) -> float:
        return welch_p(results, self.base, self.new, self.key)


def change(base: str, new: str, key: str) -> Paired:
    """Relative change from arm `base` to arm `new`, in percent, seed by seed."""
    return Paired(base, new, key, "change")


def ratio(base: str, new: str, key: str) -> Paired:
    """`new` over `base`, seed by seed."""
    return Paired(base, new, key, "ratio")


def welch_p(results: Results, base: str, new: str, key: str) -> float:
    """Two-sided p-value that arms `base` and `new` have the same mean of `key`."""
    a, b = figures(results, base, key), figures(results, new, key)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if np.all(a == a[0]) and np.all(b == b[0]):
        return 0.0 if a[0] != b[0] else 1.0
    return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def spread(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, minimum and maximum of the finite values."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return math.nan, math.nan, math.nan
    return float(finite.mean()), float(finite.min()), float(finite.max())
