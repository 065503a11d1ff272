"""The shape every check has: sources, arms, expectations with a tolerance, findings.

A check names the published work (`Source`), says what was measured there and how the
compactsim experiment corresponds, runs one or more arms (a preset scenario plus
overrides, on every seed of `seeds`), and holds expectations. An expectation turns the
arms' per-run figures into one value per seed (`stats`), and passes when their mean lies
within its band: the published shape (direction and rough magnitude), or the range of a
real capture. Nothing else decides the verdict.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np

# Per-run figures of every arm: arm name -> one dict of figures per seed, in seed order.
Results = Mapping[str, list[dict[str, float]]]

PASS = "pass"
DEPART = "depart"


@dataclasses.dataclass(frozen=True)
class Source:
    """One published work a check reproduces."""

    title: str            # LKML subject, paper or report title
    author: str
    date: str             # as published (YYYY-MM-DD or YYYY-MM)
    url: str
    kernel: str = ""      # the release that carried it, when it is kernel work


@dataclasses.dataclass(frozen=True)
class Arm:
    """One simulated configuration: a preset scenario and `path=value` overrides."""

    scenario: str
    overrides: tuple[str, ...] = ()

    def job(self, seed: int) -> tuple[str, tuple[str, ...], int]:
        """The key of one run; equal arms of different checks share their runs."""
        return (self.scenario, self.overrides, seed)

    def describe(self) -> str:
        sets = " ".join(f"--set {o}" for o in self.overrides)
        return f"--scenario {self.scenario}" + (f" {sets}" if sets else "")


@dataclasses.dataclass(frozen=True)
class Band:
    """Where the mean of the per-seed values must lie; `why` says where the bounds
    come from (the published figure and the tolerance on its shape)."""

    lo: float
    hi: float
    why: str

    def holds(self, value: float) -> bool:
        return math.isfinite(value) and self.lo <= value <= self.hi


@dataclasses.dataclass(frozen=True)
class Expect:
    """One published figure and the compactsim value that corresponds to it."""

    what: str                                    # the quantity, in words
    published: str                               # the figure as the source gives it
    values: Callable[[Results], np.ndarray]      # one value per seed (`stats`)
    band: Band | Callable[[], Band]              # a callable reads a capture when run
    unit: str = ""                               # "%", "x", "/s" or "" (plain number)

    def resolve_band(self) -> Band:
        return self.band() if callable(self.band) else self.band


@dataclasses.dataclass(frozen=True)
class Check:
    """A published result, the experiment that corresponds, and its expectations."""

    name: str                                    # short slug, unique
    title: str
    sources: tuple[Source, ...]
    published: str                               # what was measured, with the figures
    experiment: str                              # how compactsim corresponds
    arms: Mapping[str, Arm]
    expects: tuple[Expect, ...]
    mechanism: str                               # which model mechanisms decide the figures
    context: tuple[str, ...] = ()                # per-run figures shown for every arm
    seeds: tuple[int, ...] = (1, 2, 3)
    explain: Callable[[Results], list[str]] | None = None   # observations from the figures

    def jobs(self) -> list[tuple[str, tuple[str, ...], int]]:
        return [arm.job(seed) for arm in self.arms.values() for seed in self.seeds]


@dataclasses.dataclass(frozen=True)
class Finding:
    """An expectation evaluated on one set of runs."""

    expect: Expect
    band: Band
    values: tuple[float, ...]     # per seed
    mean: float
    sd: float
    verdict: str                  # PASS or DEPART
    note: str = ""                # why it could not be measured, when it could not
    p_value: float | None = None  # Welch's t-test between the arms a paired value compares


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A check evaluated: its findings and the arms' figures behind them."""

    check: Check
    findings: tuple[Finding, ...]
    results: Results
    observations: tuple[str, ...]
    error: str = ""               # a run or a measurement failed

    @property
    def verdict(self) -> str:
        if self.error or any(f.verdict != PASS for f in self.findings):
            return DEPART
        return PASS


def evaluate_expect(expect: Expect, results: Results) -> Finding:
    """The verdict of one expectation: the mean of the per-seed values inside the band."""
    band = expect.resolve_band()
    try:
        values = np.asarray(expect.values(results), dtype=float)
    except (KeyError, ZeroDivisionError, ValueError) as exc:
        return Finding(expect, band, (), math.nan, math.nan, DEPART,
                       f"not measurable: {type(exc).__name__}: {exc}")
    finite = values[np.isfinite(values)]
    if len(finite) < len(values) or not len(values):
        return Finding(expect, band, tuple(values.tolist()), math.nan, math.nan, DEPART,
                       "not measurable: a run gave no value (a count it divides by is 0)")
    mean = float(finite.mean())
    sd = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    p_value = getattr(expect.values, "p_value", None)
    return Finding(expect, band, tuple(values.tolist()), mean, sd,
                   PASS if band.holds(mean) else DEPART,
                   p_value=p_value(results) if p_value is not None else None)


def evaluate(check: Check, results: Results) -> Outcome:
    findings = tuple(evaluate_expect(e, results) for e in check.expects)
    observations = tuple(check.explain(results)) if check.explain is not None else ()
    return Outcome(check, findings, results, observations)
