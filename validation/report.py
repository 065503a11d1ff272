"""docs/validation.md: every check, its figures, pass or depart (deterministic text)."""

from __future__ import annotations

import math

from validation.checks.bands import FACTOR
from validation.checks.explain import fmt
from validation.model import DEPART, PASS, Finding, Outcome
from validation.runner import RUN_OVERRIDES
from validation.stats import Paired, figures, spread

HEADER = f"""\
# Validation against real kernels

*Written by `make validate` (`python -m validation`); do not edit by hand.*

Each check reproduces a published measurement of Linux memory-management work (LKML
cover letters, papers, production reports) or a real capture kept in
[`validation/data/`](../validation/data/README.md), with the compactsim experiment that
corresponds to it. Every arm runs on each of its seeds; a change between arms is taken
seed by seed. A finding **passes** when the mean over seeds lies in its band, which
keeps the published *shape*: the same direction, and a magnitude within a factor of
{FACTOR:g} of the published one (or of a capture's range); where a source gives only a
direction, only the direction is checked. Otherwise it **departs**, and the check lists
what the model's own figures show and which mechanisms decide them. No check is tuned
to pass: a departure is a finding about the model.

Every run uses the preset's spec with the arm's overrides, the seed, and
`{' '.join(RUN_OVERRIDES)}`, a trace ring buffer large enough for every fallback line of
these presets (a check says so if lines were lost).
"""


def _value(v: float, unit: str) -> str:
    if not math.isfinite(v):
        return "n/a"
    if unit == "%":
        return f"{v:+.1f} %" if abs(v) < 1e5 else f"{v:+.3g} %"
    if unit == "x":
        return f"{v:.3g}x"
    if unit == "/s":
        return f"{v:.3g}/s"
    return fmt(v)


def _plain_pct(v: float, unit: str) -> str:
    # levels in percent read better without a sign
    return _value(v, unit).lstrip("+")


def _of(f: Finding, v: float) -> str:
    """A value of finding `f`: signed when it is a change between arms."""
    signed = isinstance(f.expect.values, Paired) and f.expect.values.kind == "change"
    return _value(v, f.expect.unit) if signed else _plain_pct(v, f.expect.unit)


def _band(f: Finding) -> str:
    lo, hi = f.band.lo, f.band.hi
    hi_text = "inf" if math.isinf(hi) else _of(f, hi)
    return f"[{_of(f, lo)}, {hi_text}]"


def _p_text(f: Finding) -> str:
    """Welch's p between the two arms a paired finding compares."""
    if f.p_value is None or not math.isfinite(f.p_value):
        return ""
    return f"; arms differ at p = {f.p_value:.2g} (Welch)"


def _finding_row(f: Finding) -> str:
    unit = f.expect.unit
    seeds = ", ".join(_of(f, v) for v in f.values) or "none"
    got = (f"{_of(f, f.mean)} (sd {_plain_pct(f.sd, unit)}; "
           f"seeds {seeds}{_p_text(f)})" if math.isfinite(f.mean)
           else f"{f.note} (seeds {seeds})")
    verdict = "**pass**" if f.verdict == PASS else "**depart**"
    return (f"| {f.expect.what} | {f.expect.published} | {got} | {_band(f)}: "
            f"{f.band.why} | {verdict} |")


def _context_table(o: Outcome) -> list[str]:
    arms = list(o.results)
    lines = ["| figure | " + " | ".join(arms) + " |",
             "|---|" + "---|" * len(arms)]
    for key in o.check.context:
        cells = []
        for arm in arms:
            mean, lo, hi = spread(figures(o.results, arm, key))
            cells.append(f"{fmt(mean)} ({fmt(lo)} .. {fmt(hi)})" if math.isfinite(mean)
                         else "n/a")
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return lines


def render_check(o: Outcome) -> str:
    c = o.check
    out = [f"## {c.title}", "",
           f"`{c.name}`: **{o.verdict}**", "", "Sources:", ""]
    for s in c.sources:
        kernel = f", Linux {s.kernel}" if s.kernel else ""
        out.append(f"- {s.author}, {s.date}{kernel}: {s.title}. <{s.url}>")
    out += ["", f"**Published.** {c.published}", "",
            f"**Experiment.** {c.experiment} Seeds {', '.join(map(str, c.seeds))}.", ""]
    for name, arm in c.arms.items():
        out.append(f"- {name}: `compactsim simulate {arm.describe()}`")
    out.append("")
    if o.error:
        out += [f"**Not run:** {o.error}", ""]
    else:
        out += ["| finding | published | compactsim (mean over seeds) | band | verdict |",
                "|---|---|---|---|---|", *map(_finding_row, o.findings), "",
                "Figures of the runs (mean, min .. max over seeds):", "",
                *_context_table(o), ""]
    lost = sum(figures(o.results, arm, "trace_lines_lost").sum() for arm in o.results)
    if lost > 0:
        out += [f"*{lost:.0f} trace lines were lost to the ring buffer: the fallback "
                "counts of this check are too low.*", ""]
    if o.verdict == DEPART:
        out += ["**Departure: what the model shows.**", ""]
        out += [f"- {line}" for line in o.observations]
        out += [f"- Mechanisms that decide these figures: {c.mechanism}", ""]
    return "\n".join(out)


def render_summary(outcomes: list[Outcome]) -> str:
    lines = ["| check | finding | published | compactsim | verdict |",
             "|---|---|---|---|---|"]
    for o in outcomes:
        if o.error:
            lines.append(f"| [`{o.check.name}`](#{_anchor(o.check.title)}) | not run | | "
                         f"{o.error} | **depart** |")
            continue
        for f in o.findings:
            got = _of(f, f.mean) if math.isfinite(f.mean) else "n/a"
            lines.append(f"| [`{o.check.name}`](#{_anchor(o.check.title)}) | {f.expect.what} "
                         f"| {f.expect.published} | {got} in {_band(f)} | {f.verdict} |")
    passed = sum(o.verdict == PASS for o in outcomes)
    return (f"{passed} of {len(outcomes)} checks pass.\n\n" + "\n".join(lines) + "\n")


def _anchor(title: str) -> str:
    keep = "".join(ch.lower() if ch.isalnum() or ch in " -" else "" for ch in title)
    return keep.replace(" ", "-")


def render(outcomes: list[Outcome]) -> str:
    body = [HEADER, "## Summary", "", render_summary(outcomes)]
    body += [render_check(o) for o in outcomes]
    text = "\n".join(body)
    return text.rstrip("\n") + "\n"

