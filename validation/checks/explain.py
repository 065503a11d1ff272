"""Helpers for a check's observations: the arms' mean figures, in words."""

from __future__ import annotations

import math

import numpy as np

from validation.model import Results
from validation.stats import figures


def mean(results: Results, arm: str, key: str) -> float:
    values = figures(results, arm, key)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def fmt(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if value == 0 or 0.01 <= abs(value) < 1e6:
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:.3g}"


def compare(results: Results, key: str, label: str | None = None) -> str:
    """'label: arm1 X, arm2 Y' (means over seeds)."""
    parts = ", ".join(f"{arm} {fmt(mean(results, arm, key))}" for arm in results)
    return f"{label or key}: {parts}"
