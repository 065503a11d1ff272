"""Read real page-allocator traces into page events a replay can use.

Reads captures of ``kmem:mm_page_alloc``, ``mm_page_free`` and
``mm_page_free_batched`` in two text forms:

- ftrace text: ``trace``/``trace_pipe`` and ``trace-cmd report`` lines, with
  the prefix of ``trace_print_context`` (``kernel/trace/trace_output.c``) and
  the ``TP_printk`` fields of ``include/trace/events/kmem.h``, both
  ``pfn=%lu`` (before ~5.12) and ``pfn=0x%lx``;
- LTTng babeltrace 1.x text, e.g.
  ``[2017-07-07 18:18:55.358995119] (+0.000020979) calista
  kmem_mm_page_alloc: { cpu_id = 2 }, { page = 0xFFFF..., pfn = 1295344,
  order = 0, gfp_flags = 21102794, migratetype = 1 }``.

``mm_page_free_batched`` is read and counted but, by default, not made a
second free: ``free_pages_prepare()`` (``mm/page_alloc.c``, 3.x to 6.x) fires
``mm_page_free`` for every freed page, and the batch paths
(``free_hot_cold_page_list``, later ``free_unref_page_list`` and
``free_unref_folios``) fire ``mm_page_free_batched`` for the same page as
well. Both real LTTng captures show each batched event next to an
``mm_page_free`` of the same page. ``keep_batched=True`` keeps them.

Any other well-formed event line (``mm_page_alloc_zone_locked``,
``mm_page_pcpu_drain``, ``sched_switch`` ...) is counted and ignored. Lines
that are not event lines of the detected format are errors: all of them are
collected and raised as one ``TraceParseError``.

Migratetypes are given in the 4.4+ numbering (``include/linux/mmzone.h``):
0 unmovable, 1 movable, 2 reclaimable, 3 highatomic (the slot of pre-4.4
MIGRATE_RESERVE); 3.x numbers (unmovable, reclaimable, movable, reserve)
are converted. Free events carry no migratetype: theirs is -1. When an
allocation event has a migratetype field it wins; ``gfp_flags`` are then
only cross-checked (``gfpflags_to_migratetype`` in ``include/linux/gfp.h``)
and disagreements counted, which also exposes a wrong ``gfp_era``.

Simplifications:

- Numeric gfp flags are read only for their mobility bits, per era:
  '3.x' (pre-4.4: ``__GFP_MOVABLE`` 0x08, ``__GFP_RECLAIMABLE`` 0x80000) and
  '4.4+' (0x08 and 0x10, unchanged up to 6.x). Other bits moved between
  releases and are not named.
- Without a pfn field (32-bit ARM captures), pfns are derived from
  ``struct page`` pointers, assuming one flat ``mem_map``:
  pfn = (page - lowest page) / ``struct_page_size``. They are relative.
- Failed allocations (NULL page) are skipped and counted.
- babeltrace times are made relative to the file's first event; ftrace
  times are kept as printed (seconds of the trace clock).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from compactsim.sim.config import MAX_ORDER

MAX_PFN = 1 << (52 - 12)    # MAX_PHYSMEM_BITS 52 (x86-64 5-level paging), 4 KiB pages

# mm_page_alloc -> alloc; both free events -> free (free_batched is order 0).
PAGE_EVENT_KINDS = {"mm_page_alloc": "alloc", "mm_page_free": "free",
                    "mm_page_free_batched": "free"}

# era: (__GFP_MOVABLE, __GFP_RECLAIMABLE, migratetype field -> 4.4+ number)
GFP_ERAS = {
    "3.x": (0x08, 0x80000, {0: 0, 1: 2, 2: 1}),
    "4.4+": (0x08, 0x10, {}),
}
# Symbolic names (show_gfp_flags of 3.x to 6.x) that carry a mobility bit.
# 3.x printed single bits without the "__" (GFP_MOVABLE, GFP_RECLAIMABLE).
_MOVABLE_NAMES = {"GFP_HIGHUSER_MOVABLE", "GFP_TRANSHUGE",
                  "GFP_TRANSHUGE_LIGHT", "__GFP_MOVABLE", "GFP_MOVABLE"}
_RECLAIMABLE_NAMES = {"GFP_TEMPORARY", "__GFP_RECLAIMABLE", "GFP_RECLAIMABLE"}
_GFP_TOKEN = re.compile(r"_{0,2}GFP_[A-Z0-9_]+|none|0x[0-9a-fA-F]+|\d+")


@dataclass(frozen=True, slots=True)
class PageEvent:
    line_no: int        # 1-based line in the capture
    time_s: float       # seconds (see Trace.time_origin)
    cpu: int
    kind: str           # 'alloc' | 'free'
    pfn: int            # absolute, or relative when Trace.pfns_relative
    order: int
    migratetype: int    # 4.4+ numbering; -1 for frees (not traced)


@dataclass(frozen=True, slots=True)
class LineError:
    line_no: int
    text: str
    reason: str


class TraceParseError(ValueError):
    """Raised once per capture, listing every line that could not be read."""

    def __init__(self, errors: list[LineError]):
        self.errors = errors
        shown = "\n".join(f"  line {e.line_no}: {e.reason}: {e.text[:120]!r}"
                          for e in errors[:5])
        more = f"\n  ... and {len(errors) - 5} more" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} unreadable line(s) in trace:\n"
                         f"{shown}{more}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Trace:
    events: list[PageEvent]
    format: str                 # 'ftrace' | 'babeltrace' | 'empty'
    pfn_source: str             # 'pfn' field | 'page' pointers | 'none'
    pfns_relative: bool         # pfns count from the lowest page seen
    struct_page_size: int | None  # bytes per struct page, if pfns derived
    gfp_era: str
    event_counts: dict[str, int]  # every event name as printed -> lines
    ignored: int                # event lines other than the three read
    batched_frees: int          # mm_page_free_batched lines read
    failed_allocs: int          # mm_page_alloc with a NULL page, skipped
    lost_events: int            # ftrace "CPU:n [LOST m EVENTS]" total
    migratetype_mismatches: int  # gfp mobility != migratetype field
    time_origin: str | None     # babeltrace timestamp that is time_s 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Pairing:
    preallocated: list[tuple[int, int]]  # (pfn, order) in use before start
    pfn_min: int
    pfn_max: int                # last pfn touched, inclusive
    double_allocs: list[int]    # line_no of allocs of pages held
    double_frees: list[int]     # line_no of frees of pages already freed
    pages_in_use_at_end: int


class _LineFault(Exception):
    """A line that cannot be read; the message is the reason."""


def _check_era(gfp_era: str) -> None:
    if gfp_era not in GFP_ERAS:
        raise ValueError(f"gfp_era must be one of {sorted(GFP_ERAS)}, "
                         f"got {gfp_era!r}")


def normalise_migratetype(migratetype: int, gfp_era: str) -> int:
    """A traced migratetype in the 4.4+ numbering."""
    _check_era(gfp_era)
    return GFP_ERAS[gfp_era][2].get(migratetype, migratetype)


def gfp_migratetype(gfp: int | str, gfp_era: str) -> int:
    """``gfpflags_to_migratetype`` in the 4.4+ numbering (3 if both bits).

    ``gfp`` is a number, or show_gfp_flags text such as
    ``GFP_HIGHUSER_MOVABLE|__GFP_COMP`` whose numeric leftovers are read
    with the era's bits.
    """
    _check_era(gfp_era)
    movable_bit, reclaimable_bit, _ = GFP_ERAS[gfp_era]
    bits, names = (gfp, set()) if isinstance(gfp, int) else _split_gfp(gfp)
    movable = bool(bits & movable_bit) or not names.isdisjoint(_MOVABLE_NAMES)
    reclaimable = (bool(bits & reclaimable_bit)
                   or not names.isdisjoint(_RECLAIMABLE_NAMES))
    return int(movable) | int(reclaimable) << 1


def _split_gfp(text: str) -> tuple[int, set[str]]:
    """The numbers of ``a|b|0x10`` OR-ed together, and the names."""
    bits, names = 0, set()
    for token in text.split("|"):
        if not _GFP_TOKEN.fullmatch(token):
            raise ValueError(f"not a gfp flag: {token!r}")
        if token[0].isdigit():
            bits |= int(token, 0) if token[:2].lower() == "0x" else int(token)
        else:
            names.add(token)
    return bits, names


def _int(text: str) -> int:
    """A decimal or 0x-prefixed integer, as both tracers print them."""
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16)
        return int(text, 10)
    except ValueError:
        raise _LineFault(f"not an integer: {text!r}") from None


def _pointer(text: str, bare_hex: bool) -> int | None:
    """A ``struct page *``: 0 for NULL, None when hashed-out at boot."""
    if text in ("(null)", "(nil)"):
        return 0
    if text in ("(ptrval)", "(____ptrval____)"):
        return None
    if bare_hex:  # %p prints hex without 0x; trace-cmd adds the 0x
        text = text.lower().removeprefix("0x")
        if not re.fullmatch(r"[0-9a-f]+", text):
            raise _LineFault(f"not a pointer: {text!r}")
        return int(text, 16)
    return _int(text)


def _event_name(printed: str) -> str:
    """Drop the ``kmem:`` / LTTng ``kmem_`` system prefix."""
    name = printed.rsplit(":", 1)[-1]
    return name[len("kmem_"):] if name.startswith("kmem_mm_") else name


# --- ftrace text ---------------------------------------------------------

_FTRACE_LINE = re.compile(
    r"\s*(?P<comm>.{1,16}?)-(?P<pid>\d+)\s+(?:\(\s*(?:\d+|-+)\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+(?:(?P<flags>\S{1,6})\s+)?"
    r"(?P<ts>\d+\.\d+):\s+(?P<event>\w+):(?:\s+(?P<fields>.*?))?\s*")
_FTRACE_FIELDS = re.compile(r"(?:\w+=\S+\s*)*")
_FTRACE_LOST = re.compile(r"CPU:\s*\d+ \[(?:LOST (\d+) EVENTS|(\d+) EVENTS DROPPED)\]")
_TRACE_CMD_HEADER = re.compile(
    r"cpus=\d+|version = \d+|CPU \d+ is empty|"
    r"CPU\d+ data recorded at offset=0x[0-9a-f]+|\s+\d+ bytes in size.*")


def _ftrace_line(line: str):
    """(event as printed, timestamp text, seconds, () -> (cpu, fields))."""
    m = _FTRACE_LINE.fullmatch(line)
    if not m:
        raise _LineFault("not an ftrace event line")
    return (m["event"], m["ts"], float(m["ts"]),
            lambda: (int(m["cpu"]), _ftrace_fields(m["fields"] or "")))


def _ftrace_fields(text: str) -> dict[str, str]:
    if not _FTRACE_FIELDS.fullmatch(text):
        raise _LineFault("fields are not key=value")
    return dict(re.findall(r"(\w+)=(\S+)", text))


# --- babeltrace text -----------------------------------------------------

_BT_LINE = re.compile(r"\[(?P<ts>[^\]]+)\] \([^)]*\) (?:\S+ )?"
                      r"(?P<event>[\w:]+): (?P<body>\{.*\})")
_BT_FIELD = re.compile(r'(\w+) = ("(?:[^"\\]|\\.)*"|[^,{}\s]+)')
_BT_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{9})")
_BT_CLOCK = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{9})")
_BT_SECONDS = re.compile(r"(\d+)\.(\d{9})")
_DAY_NS = 86_400 * 10**9


def _bt_time_ns(text: str) -> int:
    """Nanoseconds from a babeltrace timestamp (date, time of day or seconds)."""
    if m := _BT_DATE.fullmatch(text):
        y, mo, d, h, mi, s, ns = map(int, m.groups())
        day = datetime.date(y, mo, d).toordinal()
        return (day * 86_400 + h * 3600 + mi * 60 + s) * 10**9 + ns
    if m := _BT_CLOCK.fullmatch(text):
        h, mi, s, ns = map(int, m.groups())
        return (h * 3600 + mi * 60 + s) * 10**9 + ns
    if m := _BT_SECONDS.fullmatch(text):
        return int(m[1]) * 10**9 + int(m[2])
    raise _LineFault(f"unknown babeltrace timestamp {text!r}")


def _bt_line(line: str):
    """(event as printed, timestamp text, ns, () -> (cpu, fields))."""
    m = _BT_LINE.fullmatch(line)
    if not m:
        raise _LineFault("not a babeltrace event line")

    def cpu_and_fields():
        fields = _bt_fields(m["body"])
        if "cpu_id" not in fields:
            raise _LineFault("no cpu_id")
        return _int(fields["cpu_id"]), fields
    return m["event"], m["ts"], _bt_time_ns(m["ts"]), cpu_and_fields


def _bt_fields(body: str) -> dict[str, str]:
    """Merge the ``{ name = value, ... }`` blocks (context, then payload)."""
    fields, pos = {}, 0
    while True:
        if not body.startswith("{ ", pos):
            raise _LineFault("malformed babeltrace fields")
        pos += 2
        while m := _BT_FIELD.match(body, pos):
            fields[m[1]] = m[2]
            pos = m.end()
            if not body.startswith(", ", pos):
                break
            pos += 2
        if not body.startswith(" }", pos):
            raise _LineFault("malformed babeltrace fields")
        pos += 2
        if pos == len(body):
            return fields
        if not body.startswith(", ", pos):
            raise _LineFault("malformed babeltrace fields")
        pos += 2


# --- driver --------------------------------------------------------------

@dataclass(slots=True)
class _Record:
    """One kept event before its pfn is settled."""
    line_no: int
    text: str
    time: float | int   # seconds (ftrace) or ns since the first event (LTTng)
    cpu: int
    kind: str
    pfn: int | None
    page: int | None
    order: int
    migratetype: int


@dataclass(slots=True)
class _State:
    gfp_era: str
    format: str | None = None
    records: list[_Record] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    event_counts: dict[str, int] = field(default_factory=dict)
    ignored: int = 0
    batched_frees: int = 0
    keep_batched: bool = False
    failed_allocs: int = 0
    lost_events: int = 0
    mismatches: int = 0
    time_origin: str | None = None
    first_ns: int | None = None
    day_offset_ns: int = 0
    last_ns: int = 0


def _page_record(st: _State, line_no: int, line: str, kind: str, time,
                 cpu: int, fields: dict[str, str]) -> _Record | None:
    """The kept event in ``fields``, or None for a failed allocation."""
    page = None
    if "page" in fields:
        page = _pointer(fields["page"], bare_hex=st.format == "ftrace")
    if page == 0:
        if kind == "free":
            raise _LineFault("free of a NULL page")
        st.failed_allocs += 1
        return None
    pfn = _int(fields["pfn"]) if "pfn" in fields else None
    if pfn is not None and not 0 <= pfn < MAX_PFN:
        raise _LineFault(f"pfn {pfn:#x} is beyond 52-bit physical addresses")
    if pfn is None and page is None:
        raise _LineFault("neither pfn nor page pointer")
    order = _int(fields.get("order", "0"))
    if not 0 <= order <= MAX_ORDER:
        raise _LineFault(f"order {order} is not 0..{MAX_ORDER} (MAX_PAGE_ORDER)")
    migratetype = -1
    if kind == "alloc":
        gfp = fields.get("gfp_flags")
        try:
            from_gfp = None if gfp is None else gfp_migratetype(
                _int(gfp) if gfp[0].isdigit() else gfp, st.gfp_era)
        except ValueError as exc:
            raise _LineFault(str(exc)) from None
        if "migratetype" in fields:
            migratetype = normalise_migratetype(_int(fields["migratetype"]),
                                                st.gfp_era)
            if from_gfp is not None and from_gfp != migratetype:
                st.mismatches += 1
        elif from_gfp is None:
            raise _LineFault("neither migratetype nor gfp_flags")
        else:
            migratetype = from_gfp
    return _Record(line_no, line, time, cpu, kind, pfn, page, order,
                   migratetype)


def _read_line(st: _State, line_no: int, line: str) -> None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or _TRACE_CMD_HEADER.fullmatch(line):
        return
    if m := _FTRACE_LOST.fullmatch(stripped):
        st.lost_events += int(m[1] or m[2])
        return
    if st.format is None:  # the first event line decides
        if _BT_LINE.fullmatch(line):
            st.format = "babeltrace"
        elif _FTRACE_LINE.fullmatch(line):
            st.format = "ftrace"
        else:
            raise _LineFault("neither an ftrace nor a babeltrace event line")
    reader = _bt_line if st.format == "babeltrace" else _ftrace_line
    printed, ts_text, time, cpu_and_fields = reader(line)
    if st.format == "babeltrace":
        time = _bt_relative_ns(st, time, ts_text)
    st.event_counts[printed] = st.event_counts.get(printed, 0) + 1
    name = _event_name(printed)
    kind = PAGE_EVENT_KINDS.get(name)
    if kind is None:
        st.ignored += 1
        return
    cpu, fields = cpu_and_fields()
    record = _page_record(st, line_no, line, kind, time, cpu, fields)
    if name == "mm_page_free_batched":
        st.batched_frees += 1
        if not st.keep_batched:  # the same page also has an mm_page_free
            return
    if record is not None:
        st.records.append(record)


def _bt_relative_ns(st: _State, ns: int, ts_text: str) -> int:
    """ns since the first event; a time of day that jumps back a lot wrapped."""
    if st.first_ns is None:
        st.first_ns, st.last_ns, st.time_origin = ns, ns, ts_text
    if ns + st.day_offset_ns < st.last_ns - _DAY_NS // 2:
        st.day_offset_ns += _DAY_NS
    ns += st.day_offset_ns
    st.last_ns = ns
    return ns - st.first_ns


def _settle_pfns(st: _State, struct_page_size: int) -> tuple[str, bool]:
    """Give every record a pfn; return (pfn_source, pfns_relative)."""
    with_pfn = [r for r in st.records if r.pfn is not None]
    if not st.records:
        return "none", False
    if len(with_pfn) == len(st.records):
        return "pfn", False
    if with_pfn:
        for r in st.records:
            if r.pfn is None:
                st.errors.append(LineError(r.line_no, r.text, "no pfn field "
                                           "while other events carry one"))
        return "pfn", False
    unknown = [r for r in st.records if r.page is None]
    for r in unknown:
        st.errors.append(LineError(r.line_no, r.text,
                                   "hashed page pointer, no pfn"))
    if unknown:
        return "page", True
    lowest = min(r.page for r in st.records if r.page is not None)
    for r in st.records:
        assert r.page is not None        # pages unknown returned above
        offset = r.page - lowest
        if offset % struct_page_size:
            st.errors.append(LineError(
                r.line_no, r.text, f"page 0x{r.page:x} is not a multiple of "
                f"{struct_page_size} bytes from 0x{lowest:x}"))
        r.pfn = offset // struct_page_size
    return "page", True


def parse_trace(source: str | Iterable[str], *, gfp_era: str = "4.4+",
                struct_page_size: int = 64,
                keep_batched: bool = False) -> Trace:
    """Parse a capture given as text or as lines.

    ``gfp_era`` ('3.x' or '4.4+') selects the gfp bits and migratetype
    numbering; ``struct_page_size`` (64 on x86_64, 32 on ARM32) is used only
    when pfns must be derived from page pointers; ``keep_batched`` makes
    ``mm_page_free_batched`` lines free events of their own.
    """
    _check_era(gfp_era)
    if struct_page_size <= 0:
        raise ValueError(f"struct_page_size must be positive, got {struct_page_size}")
    lines = source.splitlines() if isinstance(source, str) else source
    st = _State(gfp_era, keep_batched=keep_batched)
    for line_no, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        try:
            _read_line(st, line_no, line)
        except _LineFault as fault:
            st.errors.append(LineError(line_no, line, str(fault)))
    pfn_source, relative = _settle_pfns(st, struct_page_size)
    if st.errors:
        raise TraceParseError(sorted(st.errors, key=lambda e: e.line_no))
    per_s = 1e9 if st.format == "babeltrace" else 1.0
    events = [PageEvent(r.line_no, r.time / per_s, r.cpu, r.kind, cast(int, r.pfn),
                        r.order, r.migratetype) for r in st.records]
    return Trace(events=events, format=st.format or "empty",
                 pfn_source=pfn_source, pfns_relative=relative,
                 struct_page_size=struct_page_size if relative else None,
                 gfp_era=gfp_era, event_counts=st.event_counts,
                 ignored=st.ignored, batched_frees=st.batched_frees,
                 failed_allocs=st.failed_allocs,
                 lost_events=st.lost_events,
                 migratetype_mismatches=st.mismatches,
                 time_origin=st.time_origin)


def parse_trace_file(path: str | Path, **kwargs) -> Trace:
    """``parse_trace`` of a file; undecodable bytes make their line an error."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_trace(f, **kwargs)


def pair_events(trace: Trace) -> Pairing:
    """Walk the events in order and find what the capture did not see.

    A free of pages never allocated in the capture means they were in use
    before it began: they are returned as (pfn, order) for the replay to
    allocate first (a partly unseen block is returned page by page).
    """
    if not trace.events:
        raise ValueError("trace has no page events")
    held: set[int] = set()
    seen: set[int] = set()  # pages allocated, or freed, within the capture
    preallocated: list[tuple[int, int]] = []
    double_allocs: list[int] = []
    double_frees: list[int] = []
    for ev in trace.events:
        pages = range(ev.pfn, ev.pfn + (1 << ev.order))
        if ev.kind == "alloc":
            if not held.isdisjoint(pages):
                double_allocs.append(ev.line_no)
            held.update(pages)
            seen.update(pages)
            continue
        missing = [p for p in pages if p not in held]
        if missing:
            if not seen.isdisjoint(missing):
                double_frees.append(ev.line_no)
            unseen = [p for p in missing if p not in seen]
            if len(unseen) == len(pages):
                preallocated.append((ev.pfn, ev.order))
            else:
                preallocated.extend((p, 0) for p in unseen)
            seen.update(unseen)
        held.difference_update(pages)
    return Pairing(preallocated=preallocated,
                   pfn_min=min(ev.pfn for ev in trace.events),
                   pfn_max=max(ev.pfn + (1 << ev.order) - 1
                               for ev in trace.events),
                   double_allocs=double_allocs, double_frees=double_frees,
                   pages_in_use_at_end=len(held))
