"""The registry of checks, in the order docs/validation.md lists them.

Each module holds the checks of one kind of evidence: kernel series with measurements
in their cover letters (`series`), production reports and papers (`production`), the
seed question (`seed`), and the real captures of `validation/data/` (`real`).
"""

from __future__ import annotations

from validation.checks import production, real, seed, series
from validation.model import Check

CHECKS: tuple[Check, ...] = (
    *series.CHECKS,
    *production.CHECKS,
    *seed.CHECKS,
    *real.CHECKS,
)


def by_name(names: list[str] | None = None) -> tuple[Check, ...]:
    """The checks named (all when `names` is empty); an unknown name is a ValueError."""
    if not names:
        return CHECKS
    known = {c.name: c for c in CHECKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no check named {', '.join(unknown)} (checks: {', '.join(known)})")
    return tuple(known[n] for n in names)
