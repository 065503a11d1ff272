"""The kernel's memory-management text files, rendered byte for byte and parsed back.

Follows `mm/vmstat.c` (6.x): `frag_show_print` (/proc/buddyinfo),
`pagetypeinfo_showfree_print` and `pagetypeinfo_showblockcount_print`
(/proc/pagetypeinfo), `vmstat_show` (/proc/vmstat), `zoneinfo_show_print`
(/proc/zoneinfo), `unusable_show_print` and `extfrag_show_print` (debugfs
`extfrag/`), and `show_free_areas`/`show_migration_types` (`mm/show_mem.c`) for the
per-zone free-area line of an OOM or allocation-failure report.

Renderers print what the kernel prints, including the trailing space after each
column. Parsers accept any run of spaces between columns and a missing trailing space
(published copies are often trimmed), so only the numbers and names are data; a line
that fits no expected form raises `ValueError` naming its number.

/proc/zoneinfo changed shape between releases. A `ZoneinfoZone` keeps every line in
its printed order, and its `ZoneinfoLayout` records the three spacing/ordering
differences seen in real captures, so an old file re-renders as it was read; the
defaults, and `build_zoneinfo_zone`, give the 6.x layout.

Simplified: one file's data is a plain value (no seq_file iteration); counts are not
capped except where the kernel caps them (pagetypeinfo's ">100000"). Migratetype
names and show_migration_types letters are data, since they differ by release and
config (pre-4.4 "Reserve", CMA, Isolate).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from compactsim.sim.fragmentation import NR_PAGE_ORDERS, fragmentation_index, unusable_free_index

PAGETYPEINFO_FREE_CAP = 100000  # pagetypeinfo_showfree_print stops counting a list here
MIGRATETYPE_LETTERS = "UMEHCI"  # show_migration_types, 4.4+ type order, CMA and ISOLATION on


class _Lines:
    """A cursor over a file's lines that names the line number in every error."""

    def __init__(self, text: str):
        self._lines = [line.rstrip(" ") for line in text.splitlines()]
        self.lineno = 0  # 1-based number of the last line taken; 0 before the first

    def at_end(self) -> bool:
        return self.lineno >= len(self._lines)

    def take_if(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        if self.at_end():
            return None
        m = pattern.fullmatch(self._lines[self.lineno])
        if m:
            self.lineno += 1
        return m

    def take(self, pattern: re.Pattern[str], expected: str) -> re.Match[str]:
        m = self.take_if(pattern)
        if m is None:
            raise self.unexpected(expected)
        return m

    def unexpected(self, expected: str) -> ValueError:
        """The error for the next line, which is not `expected`."""
        got = "end of file" if self.at_end() else repr(self._lines[self.lineno])
        return ValueError(f"line {self.lineno + 1}: expected {expected}, got {got}")

    def bad_last(self, message: str) -> ValueError:
        """The error for the line just taken, which matched but does not fit."""
        return ValueError(f"line {self.lineno}: {message}")


def _zone_prefix(node: int, zone: str) -> str:
    return f"Node {node}, zone {zone:>8} "


def _ints(columns: str) -> tuple[int, ...]:
    return tuple(int(c) for c in columns.split())


# /proc/buddyinfo

@dataclass(frozen=True, slots=True)
class ZoneFree:
    """One /proc/buddyinfo row: free blocks per order (all migratetypes) of a zone."""

    node: int
    zone: str
    nr_free: tuple[int, ...]  # zone->free_area[order].nr_free, order 0 first


_BUDDY = re.compile(r"Node (\d+), zone +(\S+)((?: +\d+)+)")


def render_buddyinfo(zones: Iterable[ZoneFree]) -> str:
    """/proc/buddyinfo: `Node %d, zone %8s ` then `%6lu ` per order."""
    return "".join(_zone_prefix(z.node, z.zone) + "".join(f"{n:6d} " for n in z.nr_free) + "\n"
                   for z in zones)


def parse_buddyinfo(text: str) -> tuple[ZoneFree, ...]:
    """The rows of /proc/buddyinfo, with as many orders as each row prints."""
    lines, zones = _Lines(text), []
    while not lines.at_end():
        m = lines.take(_BUDDY, "'Node <nid>, zone <name>' and a free count per order")
        zones.append(ZoneFree(int(m[1]), m[2], _ints(m[3])))
    return tuple(zones)


# debugfs extfrag/unusable_index and extfrag/extfrag_index

def _c_thousandths(index: int, int_width: int) -> str:
    """`"%*d.%03d", index / 1000, index % 1000` with C's truncating division.

    So -1000 prints "-1.000" but -500 prints "0.-500", as the kernel does.
    """
    whole, frac = divmod(abs(index), 1000)
    if index < 0:
        whole, frac = -whole, -frac
    return f"{whole:{int_width}d}.{frac:03d}"


def render_unusable_index(zones: Iterable[ZoneFree]) -> str:
    """debugfs extfrag/unusable_index: `Node %d, zone %8s ` then `%d.%03d ` per order."""
    return "".join(
        _zone_prefix(z.node, z.zone)
        + "".join(_c_thousandths(unusable_free_index(z.nr_free, o), 1) + " "
                  for o in range(len(z.nr_free)))
        + "\n"
        for z in zones)


def render_extfrag_index(zones: Iterable[ZoneFree]) -> str:
    """debugfs extfrag/extfrag_index: as unusable_index with `%2d.%03d `."""
    return "".join(
        _zone_prefix(z.node, z.zone)
        + "".join(_c_thousandths(fragmentation_index(z.nr_free, o), 2) + " "
                  for o in range(len(z.nr_free)))
        + "\n"
        for z in zones)


# show_free_areas(): "Node 0 Normal: 3*4kB (UM) 0*8kB ... = 12kB"

def render_show_free_areas_line(nr_free_by_type: Sequence[Sequence[int]], *, node: int | None,
                                zone: str, type_letters: str = MIGRATETYPE_LETTERS,
                                page_size_kb: int = 4) -> str:
    """One zone's line of show_free_areas(), with its newline.

    `nr_free_by_type[migratetype][order]` are the free list lengths (pagetypeinfo's
    rows). `node` is None for a !CONFIG_NUMA kernel, whose show_node() prints nothing.
    A type's letter appears at an order only if its list there is non-empty.
    """
    if len(nr_free_by_type) > len(type_letters):
        raise ValueError(f"{len(nr_free_by_type)} migratetypes but letters {type_letters!r}")
    parts = [f"Node {node} " if node is not None else "", f"{zone}: "]
    total = 0
    for order in range(len(nr_free_by_type[0])):
        nr = sum(counts[order] for counts in nr_free_by_type)
        total += nr << order
        parts.append(f"{nr}*{page_size_kb << order}kB ")
        if nr:
            letters = "".join(letter for letter, counts in zip(type_letters, nr_free_by_type)
                              if counts[order])
            parts.append(f"({letters}) ")
    parts.append(f"= {total * page_size_kb}kB\n")
    return "".join(parts)


# /proc/pagetypeinfo

@dataclass(frozen=True, slots=True)
class PagetypeFree:
    """Free blocks per order on one zone's free list of one migratetype."""

    node: int
    zone: str
    type_name: str
    nr_free: tuple[int, ...]  # counts >= PAGETYPEINFO_FREE_CAP print as ">100000"


@dataclass(frozen=True, slots=True)
class PagetypeBlocks:
    """Pageblocks of one zone per migratetype, in `PagetypeInfo.type_names` order."""

    node: int
    zone: str
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PagetypeInfo:
    """The whole of /proc/pagetypeinfo; nodes print in their order of appearance."""

    pageblock_order: int
    pages_per_block: int
    type_names: tuple[str, ...]  # migratetype_names[], e.g. ("Unmovable", "Movable", ...)
    free: tuple[PagetypeFree, ...]
    blocks: tuple[PagetypeBlocks, ...]
    mixed: tuple[PagetypeBlocks, ...] = ()  # "Number of mixed blocks" (page_owner only)


def _free_count(n: int) -> str:
    return f">{PAGETYPEINFO_FREE_CAP}" if n >= PAGETYPEINFO_FREE_CAP else f"{n:6d}"


def _blocks_section(title: str, type_names: Sequence[str], rows: Iterable[PagetypeBlocks]) -> str:
    header = f"\n{title:<23}" + "".join(f"{t:>12} " for t in type_names) + "\n"
    return header + "".join(_zone_prefix(b.node, b.zone) + "".join(f"{c:12d} " for c in b.counts)
                            + "\n" for b in rows)


def render_pagetypeinfo(info: PagetypeInfo) -> str:
    """/proc/pagetypeinfo; the kernel repeats every section for each node with memory."""
    n_orders = len(info.free[0].nr_free) if info.free else NR_PAGE_ORDERS
    nodes = dict.fromkeys([f.node for f in info.free] + [b.node for b in info.blocks])
    out = []
    for node in nodes:
        out.append(f"Page block order: {info.pageblock_order}\n"
                   f"Pages per block:  {info.pages_per_block}\n\n")
        out.append(f"{'Free pages count per migrate type at order':<43} "
                   + "".join(f"{o:6d} " for o in range(n_orders)) + "\n")
        out.extend(f"Node {f.node:4d}, zone {f.zone:>8}, type {f.type_name:>12} "
                   + "".join(_free_count(n) + " " for n in f.nr_free) + "\n"
                   for f in info.free if f.node == node)
        out.append(_blocks_section("Number of blocks type ", info.type_names,
                                   (b for b in info.blocks if b.node == node)))
        if info.mixed:
            out.append(_blocks_section("Number of mixed blocks ", info.type_names,
                                       (b for b in info.mixed if b.node == node)))
    return "".join(out)


_PT_ORDER = re.compile(r"Page block order: (\d+)")
_PT_PER_BLOCK = re.compile(r"Pages per block: +(\d+)")
_PT_BLANK = re.compile(r"")
_PT_FREE_HEADER = re.compile(r"Free pages count per migrate type at order((?: +\d+)+)")
_PT_FREE = re.compile(r"Node +(\d+), zone +(\S+), type +(\S+)((?: +>?\d+)+)")
_PT_BLOCKS_HEADER = re.compile(r"Number of blocks type((?: +\S+)+)")
_PT_MIXED_HEADER = re.compile(r"Number of mixed blocks((?: +\S+)+)")
_PT_BLOCKS = re.compile(r"Node (\d+), zone +(\S+)((?: +\d+)+)")


def _take_blocks(lines: _Lines, type_names: tuple[str, ...]) -> list[PagetypeBlocks]:
    rows = []
    while m := lines.take_if(_PT_BLOCKS):
        counts = _ints(m[3])
        if len(counts) != len(type_names):
            raise lines.bad_last(f"expected {len(type_names)} pageblock counts, one per type")
        rows.append(PagetypeBlocks(int(m[1]), m[2], counts))
    return rows


def parse_pagetypeinfo(text: str) -> PagetypeInfo:
    """Every node's sections of /proc/pagetypeinfo; ">100000" reads as 100000."""
    lines = _Lines(text)
    order = per_block = type_names = None
    free, blocks, mixed = [], [], []
    while not lines.at_end():
        this_order = int(lines.take(_PT_ORDER, "'Page block order: <n>'")[1])
        this_per_block = int(lines.take(_PT_PER_BLOCK, "'Pages per block: <n>'")[1])
        if order is not None and (this_order, this_per_block) != (order, per_block):
            raise lines.bad_last("pageblock size differs from the previous node's")
        order, per_block = this_order, this_per_block
        lines.take(_PT_BLANK, "a blank line")
        lines.take(_PT_FREE_HEADER, "'Free pages count per migrate type at order' and orders")
        node_free = []
        while m := lines.take_if(_PT_FREE):
            counts = tuple(int(c.lstrip(">")) for c in m[4].split())
            node_free.append(PagetypeFree(int(m[1]), m[2], m[3], counts))
        lines.take(_PT_BLANK, "a free-list line or a blank line")
        names = tuple(lines.take(_PT_BLOCKS_HEADER, "'Number of blocks type' and type names")[1]
                      .split())
        free_names = tuple(dict.fromkeys(f.type_name for f in node_free))
        if free_names and names != free_names or type_names not in (None, names):
            raise lines.bad_last(f"types {names} differ from {free_names or type_names}")
        type_names = names
        free += node_free
        blocks += _take_blocks(lines, type_names)
        if lines.take_if(_PT_BLANK):
            m = lines.take(_PT_MIXED_HEADER, "'Number of mixed blocks' and type names")
            if tuple(m[1].split()) != type_names:
                raise lines.bad_last(f"mixed-block types differ from {type_names}")
            mixed += _take_blocks(lines, type_names)
    if order is None or per_block is None or type_names is None:
        raise lines.unexpected("'Page block order: <n>'")
    return PagetypeInfo(order, per_block, type_names, tuple(free), tuple(blocks), tuple(mixed))


# /proc/vmstat

def render_vmstat(counters: Mapping[str, int]) -> str:
    """/proc/vmstat: `name value` lines in the given order."""
    return "".join(f"{name} {value}\n" for name, value in counters.items())


_VMSTAT = re.compile(r"(\S+) +(\d+)")


def parse_vmstat(text: str) -> dict[str, int]:
    """The counters of /proc/vmstat, in file order."""
    lines, counters = _Lines(text), {}
    while not lines.at_end():
        m = lines.take(_VMSTAT, "'<counter name> <value>'")
        if m[1] in counters:
            raise lines.bad_last(f"counter {m[1]!r} appears twice")
        counters[m[1]] = int(m[2])
    return counters


# /proc/zoneinfo

@dataclass(frozen=True, slots=True)
class ZoneinfoLayout:
    """Where /proc/zoneinfo's layout differs between releases (defaults: 4.12+ to 6.x)."""

    counter_indent: int = 6         # zone counters: "\n    %-12s" before 4.8, "\n      %-12s" since
    protection_first: bool = True   # "protection:" above the counters since 4.12, below before
    tail_label_width: int = 21      # "  %-21s" labels after pagesets: 19 before 4.8


@dataclass(frozen=True, slots=True)
class Pageset:
    """One CPU's per-cpu page list of a zone, as zoneinfo prints it."""

    cpu: int
    count: int                         # pages on the pcp lists
    high: int                          # drain above this
    batch: int                         # pages moved per refill/drain
    high_min: int | None = None        # printed with high_max since late 2024 (~6.13)
    high_max: int | None = None
    stat_threshold: int | None = None  # "vm stats threshold" (CONFIG_SMP)

    def __post_init__(self):
        if (self.high_min is None) != (self.high_max is None):
            raise ValueError("high_min and high_max are printed together: give both or neither")


@dataclass(frozen=True, slots=True)
class ZoneinfoZone:
    """One zone's section of /proc/zoneinfo, every printed line in order.

    `fields` are the lines between the header and the counters, keyed by their printed
    label ("pages free", "boost", "min", "low", "high", "promo", "spanned", "present",
    "managed", "cma"; older: "scanned", "node_scanned"). An unpopulated zone (4.12+)
    stops after `protection`: no counters, `pagesets` None, no tail.
    """

    node: int
    zone: str
    fields: tuple[tuple[str, int], ...]
    protection: tuple[int, ...]                 # lowmem_reserve[], one per zone of the node
    counters: tuple[tuple[str, int], ...] = ()  # zone stat items, then NUMA events
    pagesets: tuple[Pageset, ...] | None = None
    tail: tuple[tuple[str, int], ...] = ()      # ("node_unreclaimable", 0), ("start_pfn", n)
    node_stats: tuple[tuple[str, int], ...] | None = None  # "per-node stats" (4.8+)
    layout: ZoneinfoLayout = field(default_factory=ZoneinfoLayout)

    def value(self, name: str) -> int:
        """A field, counter, tail or node-stat value by its printed name."""
        for pairs in (self.fields, self.tail, self.counters, self.node_stats or ()):
            for key, value in pairs:
                if key == name:
                    return value
        raise KeyError(name)


_FIELD_PREFIX = {"pages free": "  pages free     ", "node_scanned": "   node_scanned  "}


def _field_line(name: str, value: int) -> str:
    return _FIELD_PREFIX.get(name, f"        {name:<8} ") + str(value)


def _counter_line(name: str, value: int, indent: int) -> str:
    return f"{' ' * indent}{name:<12} {value}"


def _pageset_lines(p: Pageset) -> list[str]:
    values: list[tuple[str, int | None]] = [("count", p.count), ("high", p.high),
                                            ("batch", p.batch)]
    if p.high_min is not None:
        values += [("high_min", p.high_min), ("high_max", p.high_max)]
    # The value column sits one space past the longest label ("batch:" or "high_min:").
    width = max(len(name) for name, _ in values) + 2
    lines = [f"    cpu: {p.cpu}"]
    lines += [f"              {name + ':':<{width}}{v}" for name, v in values]
    if p.stat_threshold is not None:
        lines.append(f"  vm stats threshold: {p.stat_threshold}")
    return lines


def _zone_lines(z: ZoneinfoZone) -> list[str]:
    lines = [f"Node {z.node}, zone {z.zone:>8}"]
    if z.node_stats is not None:
        lines.append("  per-node stats")
        lines += [_counter_line(name, v, 6) for name, v in z.node_stats]
    lines += [_field_line(name, v) for name, v in z.fields]
    protection = "        protection: (" + ", ".join(str(r) for r in z.protection) + ")"
    counters = [_counter_line(name, v, z.layout.counter_indent) for name, v in z.counters]
    lines += [protection, *counters] if z.layout.protection_first else [*counters, protection]
    if z.pagesets is not None:
        lines.append("  pagesets")
        for p in z.pagesets:
            lines += _pageset_lines(p)
    width = z.layout.tail_label_width
    lines += [f"  {name + ':':<{width}}{v}" for name, v in z.tail]
    return lines


def render_zoneinfo(zones: Iterable[ZoneinfoZone]) -> str:
    """/proc/zoneinfo: every zone of every node, in the given order."""
    return "".join(line + "\n" for z in zones for line in _zone_lines(z))


def build_zoneinfo_zone(*, node: int, zone: str, free: int, min: int, low: int, high: int,
                        spanned: int, present: int, managed: int, protection: Sequence[int],
                        start_pfn: int, boost: int = 0, promo: int | None = None, cma: int = 0,
                        counters: Mapping[str, int] | None = None,
                        pagesets: Sequence[Pageset] = (), node_unreclaimable: bool = False,
                        node_stats: Mapping[str, int] | None = None) -> ZoneinfoZone:
    """A zone's section in the 6.x layout from plain values (pages).

    `promo` (the NUMA-tiering promotion watermark, 6.1+) is printed only if given.
    `counters` follow `nr_free_pages`, which is `free` unless given. A zone with no
    present pages is unpopulated and, as in the kernel, stops after `protection`.
    `node_stats` belongs on the node's first populated zone.
    """
    fields = [("pages free", free), ("boost", boost), ("min", min), ("low", low), ("high", high)]
    if promo is not None:
        fields.append(("promo", promo))
    fields += [("spanned", spanned), ("present", present), ("managed", managed), ("cma", cma)]
    if present == 0:
        if node_stats is not None:
            raise ValueError("an unpopulated zone never carries the per-node stats")
        return ZoneinfoZone(node, zone, tuple(fields), tuple(protection))
    zone_counters = {"nr_free_pages": free, **(counters or {})}
    return ZoneinfoZone(
        node, zone, tuple(fields), tuple(protection),
        counters=tuple(zone_counters.items()),
        pagesets=tuple(pagesets),
        tail=(("node_unreclaimable", int(node_unreclaimable)), ("start_pfn", start_pfn)),
        node_stats=None if node_stats is None else tuple(node_stats.items()))


_ZI_HEADER = re.compile(r"Node (\d+), zone +(\S+)")
_ZI_PER_NODE = re.compile(r"  per-node stats")
_ZI_NODE_STAT = re.compile(r" {6}(\S*) +(\d+)")  # \S*: a 2019 capture has a nameless stat
_ZI_FIELD = re.compile(
    r" +(pages free|node_scanned|scanned|boost|min|low|high|promo|spanned|present|managed|cma)"
    r" +(\d+)")
_ZI_PROTECTION = re.compile(r" +protection: \((-?\d+(?:, -?\d+)*)\)")
_ZI_COUNTER = re.compile(r"( {4}| {6})(\S+) +(-?\d+)")
_ZI_PAGESETS = re.compile(r"  pagesets")
_ZI_CPU = re.compile(r" +cpu: (\d+)")
_ZI_PCP = re.compile(r" +(count|high|batch|high_min|high_max): +(-?\d+)")
_ZI_THRESHOLD = re.compile(r" +vm stats threshold: (-?\d+)")
_ZI_TAIL = re.compile(r"(  ([a-z_]+): +)(\d+)")


def _take_all(lines: _Lines, pattern: re.Pattern[str]) -> list[re.Match[str]]:
    matches = []
    while m := lines.take_if(pattern):
        matches.append(m)
    return matches


def _take_zone_counters(lines: _Lines) -> tuple[list[tuple[str, int]], int | None]:
    counters, indent = [], None
    while m := lines.take_if(_ZI_COUNTER):
        if indent is None:
            indent = len(m[1])
        elif len(m[1]) != indent:
            raise lines.bad_last(f"expected a counter indented {indent} spaces like the others")
        counters.append((m[2], int(m[3])))
    return counters, indent


def _take_pagesets(lines: _Lines) -> tuple[Pageset, ...]:
    pagesets = []
    while m := lines.take_if(_ZI_CPU):
        pcp = {}
        while p := lines.take_if(_ZI_PCP):
            pcp[p[1]] = int(p[2])
        if not {"count", "high", "batch"} <= pcp.keys():
            raise lines.unexpected("count:, high: and batch: for the cpu")
        threshold = lines.take_if(_ZI_THRESHOLD)
        if threshold is not None:
            pcp["stat_threshold"] = int(threshold[1])
        pagesets.append(Pageset(int(m[1]), **pcp))
    return tuple(pagesets)


def _take_zone(lines: _Lines, expected: str) -> ZoneinfoZone:
    m = lines.take(_ZI_HEADER, expected)
    node, zone = int(m[1]), m[2]
    node_stats = None
    if lines.take_if(_ZI_PER_NODE):
        node_stats = tuple((s[1], int(s[2])) for s in _take_all(lines, _ZI_NODE_STAT))
    fields = tuple((f[1], int(f[2])) for f in _take_all(lines, _ZI_FIELD))
    if not fields:
        raise lines.unexpected("'  pages free     <n>'")
    p = lines.take_if(_ZI_PROTECTION)
    protection_first = p is not None
    counters, indent = _take_zone_counters(lines)
    if p is None:
        p = lines.take(_ZI_PROTECTION, "a zone counter or '        protection: (...)'")
    pagesets = _take_pagesets(lines) if lines.take_if(_ZI_PAGESETS) else None
    tail = _take_all(lines, _ZI_TAIL)
    layout = ZoneinfoLayout(counter_indent=indent or 6, protection_first=protection_first,
                            tail_label_width=len(tail[0][1]) - 2 if tail else 21)
    return ZoneinfoZone(node, zone, fields, _ints(p[1].replace(",", " ")), tuple(counters),
                        pagesets, tuple((t[2], int(t[3])) for t in tail), node_stats, layout)


def parse_zoneinfo(text: str) -> tuple[ZoneinfoZone, ...]:
    """Every zone section of /proc/zoneinfo, each with the layout it was printed in."""
    lines = _Lines(text)
    zones: list[ZoneinfoZone] = []
    while not lines.at_end():
        # Past the first zone, the line may instead be a misprinted line of the last one.
        expected = "'Node <nid>, zone <name>'"
        if zones:
            expected = f"a line of zone {zones[-1].node}/{zones[-1].zone} or {expected}"
        zones.append(_take_zone(lines, expected))
    return tuple(zones)
