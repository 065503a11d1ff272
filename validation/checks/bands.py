"""Tolerances on the shape of a published result, the same rule for every check.

A relative change keeps its direction and its magnitude within a factor of two of the
published one (a published -95 % accepts -47.5 % to -100 %). A level or a ratio lies
within a factor of two of the published value, or within a capture's range widened by
that factor. Where a source gives only a direction, the band is that direction.
"""

from __future__ import annotations

import math

from validation.model import Band

FACTOR = 2.0


def change(published_pct: float, source: str) -> Band:
    """Same direction as `published_pct`, magnitude within a factor of two."""
    a, b = published_pct / FACTOR, published_pct * FACTOR
    lo, hi = min(a, b), max(a, b)
    return Band(max(lo, -100.0), hi,
                f"{source} {published_pct:+.1f} %: same direction, magnitude within x{FACTOR:g}")


def level(published: float, source: str, cap: float = math.inf) -> Band:
    """Within a factor of two of a positive published value (at most `cap`)."""
    return Band(published / FACTOR, min(published * FACTOR, cap),
                f"{source} {published:.3g}: within x{FACTOR:g}")


def span(low: float, high: float, source: str, cap: float = math.inf) -> Band:
    """A range of real figures, widened by a factor of two each way (at most `cap`)."""
    return Band(low / FACTOR, min(high * FACTOR, cap),
                f"{source} {low:.3g} .. {high:.3g}, widened x{FACTOR:g}")


def direction(up: bool, source: str) -> Band:
    """Only the direction: a rise (or a fall) of at least 1 %."""
    return (Band(1.0, math.inf, f"{source}: up (direction only)") if up
            else Band(-100.0, -1.0, f"{source}: down (direction only)"))
