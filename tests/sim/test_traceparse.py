"""compactsim.sim.traceparse: real LTTng captures, ftrace round trips, errors, gfp eras, pairing."""

from collections import Counter

import pytest
from captures import ARM, X86, real
from hypothesis import given, settings
from hypothesis import strategies as st

from compactsim.sim import gfp
from compactsim.sim.traceparse import (
    PageEvent,
    TraceParseError,
    gfp_migratetype,
    normalise_migratetype,
    pair_events,
    parse_trace,
    parse_trace_file,
)
from compactsim.sim.tracepoint import (
    TraceBuffer,
    fmt_mm_page_alloc,
    fmt_mm_page_alloc_extfrag,
    fmt_mm_page_alloc_zone_locked,
    fmt_mm_page_free,
    fmt_mm_page_free_batched,
    fmt_mm_page_pcpu_drain,
    format_line,
    gfp_flags_to_str,
    pfn_to_page,
)

# --- real LTTng captures ----------------------------------------------------

def test_x86_capture_parses_with_its_known_counts():
    trace = parse_trace_file(real(X86), gfp_era="4.4+")
    assert trace.format == "babeltrace"
    assert trace.event_counts == {
        "kmem_mm_page_alloc": 1128, "kmem_mm_page_free": 193,
        "kmem_mm_page_free_batched": 138,
        "kmem_mm_page_alloc_zone_locked": 964, "kmem_mm_page_alloc_extfrag": 1}
    assert trace.ignored == 965 and trace.batched_frees == 138
    assert trace.failed_allocs == 0
    kinds = Counter(ev.kind for ev in trace.events)
    assert kinds == {"alloc": 1128, "free": 193}


def test_x86_capture_uses_the_pfn_field():
    trace = parse_trace_file(real(X86))
    assert (trace.pfn_source, trace.pfns_relative) == ("pfn", False)
    assert all(isinstance(ev.pfn, int) and ev.pfn >= 0 for ev in trace.events)
    first = trace.events[0]   # line 33: pfn = 1295344, order = 0, migratetype = 0
    assert (first.line_no, first.pfn, first.order, first.migratetype) == (33, 1295344, 0, 0)
    assert {ev.cpu for ev in trace.events} == {2}
    times = [ev.time_s for ev in trace.events]
    assert times == sorted(times) and 3.6 < times[-1] < 3.8   # the capture spans 3.7 s
    assert trace.time_origin == "2017-07-07 18:18:55.358995119"


def test_x86_gfp_flags_agree_with_migratetype_only_in_the_4_4_layout():
    assert parse_trace_file(real(X86), gfp_era="4.4+").migratetype_mismatches == 0
    assert parse_trace_file(X86, gfp_era="3.x").migratetype_mismatches > 0


def test_arm_capture_parses_with_its_known_counts():
    trace = parse_trace_file(real(ARM), gfp_era="3.x", struct_page_size=32)
    assert trace.event_counts == {
        "mm_page_alloc": 504, "mm_page_free": 351, "mm_page_free_batched": 108,
        "mm_page_alloc_zone_locked": 150, "mm_page_pcpu_drain": 31}
    assert trace.ignored == 181 and trace.batched_frees == 108
    assert Counter(ev.kind for ev in trace.events) == {"alloc": 504, "free": 351}
    assert {ev.cpu for ev in trace.events} == {0, 1, 2, 3}


def test_arm_pfns_are_derived_from_page_pointers_and_relative():
    trace = parse_trace_file(real(ARM), gfp_era="3.x", struct_page_size=32)
    assert (trace.pfn_source, trace.pfns_relative, trace.struct_page_size) == (
        "page", True, 32)
    pfns = [ev.pfn for ev in trace.events]
    assert all(isinstance(p, int) and p >= 0 for p in pfns) and min(pfns) == 0
    # line 1: page 0xC10AEA00; the lowest page in the file is 0xC1089800
    assert trace.events[0].pfn == (0xC10AEA00 - 0xC1089800) // 32


def test_arm_pages_are_not_64_byte_apart_so_x86_struct_page_size_fails():
    with pytest.raises(TraceParseError, match="not a multiple of 64 bytes"):
        parse_trace_file(real(ARM), gfp_era="3.x", struct_page_size=64)


def test_arm_migratetypes_are_renumbered_from_3_x():
    trace = parse_trace_file(real(ARM), gfp_era="3.x", struct_page_size=32)
    assert trace.migratetype_mismatches == 0
    allocs = Counter(ev.migratetype for ev in trace.events if ev.kind == "alloc")
    # 3.x migratetype=2 (MOVABLE, gfp 0x200da) x255 -> 1; =1 (RECLAIMABLE) x3 -> 2
    assert allocs == {1: 255, 0: 246, 2: 3}
    wrong_era = parse_trace_file(ARM, gfp_era="4.4+", struct_page_size=32)
    assert wrong_era.migratetype_mismatches > 0


@pytest.mark.parametrize("path, kw, batched", [
    (X86, {}, 138), (ARM, {"gfp_era": "3.x", "struct_page_size": 32}, 108)])
def test_batched_frees_duplicate_mm_page_free(path, kw, batched):
    kept = parse_trace_file(real(path), keep_batched=True, **kw)
    assert len(pair_events(kept).double_frees) == batched
    assert pair_events(parse_trace_file(path, **kw)).double_frees == []


def test_garbled_line_in_a_real_capture_is_named_by_line_number():
    lines = real(X86).read_text().splitlines()
    lines[499] = lines[499][:60]                       # truncated mid-line
    with pytest.raises(TraceParseError) as err:
        parse_trace(lines)
    assert [e.line_no for e in err.value.errors] == [500]
    assert "line 500:" in str(err.value)


# --- ftrace text ------------------------------------------------------------

def _capture(pfn_hex: bool) -> tuple[str, list[tuple]]:
    """A trace_pipe capture written with sim.tracepoint, and what it holds."""
    buf = TraceBuffer(100, events=["mm_page_alloc", "mm_page_free",
                                   "mm_page_alloc_zone_locked",
                                   "mm_page_pcpu_drain", "mm_page_alloc_extfrag"])
    want = []

    def alloc(t, cpu, pfn, order, mask):
        mt = gfp.gfp_migratetype(mask)
        buf.emit(t, cpu, "bash", 4242, "mm_page_alloc", fmt_mm_page_alloc(
            pfn_to_page(pfn), pfn, order, mt, gfp_flags_to_str(mask), pfn_hex=pfn_hex))
        want.append((t, cpu, "alloc", pfn, order, mt))

    def free(t, cpu, pfn, order):
        buf.emit(t, cpu, "kswapd0", 77, "mm_page_free",
                 fmt_mm_page_free(pfn_to_page(pfn), pfn, order, pfn_hex=pfn_hex))
        want.append((t, cpu, "free", pfn, order, -1))

    buf.emit(0.5, 1, "bash", 4242, "mm_page_alloc_zone_locked",
             fmt_mm_page_alloc_zone_locked(pfn_to_page(512), 512, 0, 1, True,
                                           pfn_hex=pfn_hex))
    alloc(0.5, 1, 512, 0, gfp.GFP_HIGHUSER_MOVABLE)
    alloc(1.25, 3, 0x3F000, 9, gfp.GFP_TRANSHUGE)
    alloc(2.000001, 0, 77, 1, gfp.GFP_KERNEL | gfp.__GFP_RECLAIMABLE)
    buf.emit(2.5, 0, "bash", 4242, "mm_page_alloc",
             fmt_mm_page_alloc(None, 0, 3, 0, "GFP_KERNEL", pfn_hex=pfn_hex))
    buf.emit(2.75, 0, "bash", 4242, "mm_page_alloc_extfrag",
             fmt_mm_page_alloc_extfrag(pfn_to_page(1024), 1024, 0, 10, 9, 0, 1,
                                       True, pfn_hex=pfn_hex))
    free(3.0, 1, 512, 0)
    buf.emit(3.0, 1, "kswapd0", 77, "mm_page_pcpu_drain",
             fmt_mm_page_pcpu_drain(pfn_to_page(512), 512, 0, 1, pfn_hex=pfn_hex))
    alloc(4.0, 2, 1 << 20, 0, gfp.GFP_ATOMIC)
    free(12345.678901, 3, 0x3F000, 9)
    return buf.render(header=True, nr_cpus=4), want


@pytest.mark.parametrize("pfn_hex", [True, False])
def test_ftrace_round_trip_of_every_field(pfn_hex):
    text, want = _capture(pfn_hex)
    trace = parse_trace(text)
    assert trace.format == "ftrace" and trace.pfn_source == "pfn"
    got = [(ev.time_s, ev.cpu, ev.kind, ev.pfn, ev.order, ev.migratetype)
           for ev in trace.events]
    assert got == want
    assert (trace.ignored, trace.failed_allocs, trace.migratetype_mismatches) == (3, 1, 0)
    lines = text.splitlines()
    assert all(lines[ev.line_no - 1].split(": ")[1] == f"mm_page_{ev.kind}"
               for ev in trace.events)


events_st = st.lists(st.tuples(
    st.integers(0, 10**12),                    # time in microseconds
    st.integers(0, 511),                       # cpu
    st.sampled_from(["alloc", "free", "free_batched"]),
    st.integers(0, 2**40 - 1),                 # pfn (52-bit physical addresses)
    st.integers(0, 10),                        # order
    st.sampled_from([gfp.GFP_KERNEL, gfp.GFP_HIGHUSER_MOVABLE, gfp.GFP_ATOMIC,
                     gfp.GFP_TRANSHUGE_LIGHT, gfp.GFP_NOWAIT,
                     gfp.GFP_KERNEL | gfp.__GFP_RECLAIMABLE]),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789/:-_ ", min_size=1, max_size=15)
      .filter(lambda s: s.strip() == s),       # comm; %16s cannot keep edge spaces
    st.integers(0, 4_194_304),                 # pid
), max_size=30)


@settings(max_examples=60, deadline=None)
@given(events=events_st, pfn_hex=st.booleans())
def test_ftrace_round_trip_property(events, pfn_hex):
    buf = TraceBuffer(len(events) + 1, events=[
        "mm_page_alloc", "mm_page_free", "mm_page_free_batched"])
    want = []
    for usecs, cpu, kind, pfn, order, mask, comm, pid in events:
        t, page = usecs / 1e6, pfn_to_page(pfn)
        if kind == "alloc":
            mt = gfp.gfp_migratetype(mask)
            fields = fmt_mm_page_alloc(page, pfn, order, mt, gfp_flags_to_str(mask),
                                       pfn_hex=pfn_hex)
        elif kind == "free":
            mt, fields = -1, fmt_mm_page_free(page, pfn, order, pfn_hex=pfn_hex)
        else:
            mt, order = -1, 0
            fields = fmt_mm_page_free_batched(page, pfn, pfn_hex=pfn_hex)
        buf.emit(t, cpu, comm, pid, f"mm_page_{kind}", fields)
        want.append((t, cpu, "alloc" if kind == "alloc" else "free", pfn, order, mt))
    trace = parse_trace(buf.render(), keep_batched=True)
    assert [(e.time_s, e.cpu, e.kind, e.pfn, e.order, e.migratetype)
            for e in trace.events] == want
    assert trace.migratetype_mismatches == 0


TRACE_CMD_REPORT = """\
version = 6
cpus=4
CPU 2 is empty
           <idle>-0     [000]   210.123456: mm_page_alloc:        page=0xffffea0000123440 pfn=0x48d1 order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP
CPU:1 [LOST 12 EVENTS]
 Web Content-3141  [001] d..2.   210.500000: mm_page_free:         page=0xffffea0000123440 pfn=0x48d1 order=0
           <...>-99    (-------) [003] ....   211.000001: sched_switch: prev_comm=a prev_pid=99 ==> next_comm=b next_pid=0
"""


def test_trace_cmd_report_headers_lost_events_and_other_events():
    trace = parse_trace(TRACE_CMD_REPORT)
    assert [(e.line_no, e.kind, e.cpu, e.pfn, e.migratetype) for e in trace.events] == [
        (4, "alloc", 0, 0x48D1, 1), (6, "free", 1, 0x48D1, -1)]
    assert (trace.lost_events, trace.ignored) == (12, 1)
    assert trace.event_counts["sched_switch"] == 1


PRE_5_12_TRACE_PIPE = """\
# tracer: nop
#
          <idle>-0     [001] d.s3  1000.000100: mm_page_alloc: page=(null) pfn=0 order=4 migratetype=0 gfp_flags=GFP_ATOMIC|__GFP_COMP
            cat-812   [000] ....  1000.000200: mm_page_alloc: page=ffffea00004a3c00 pfn=76016 order=0 migratetype=2 gfp_flags=GFP_TEMPORARY|__GFP_COMP
            cat-812   [000] ....  1000.000300: mm_page_free: page=ffffea00004a3c00 pfn=76016 order=0
"""


def test_decimal_pfns_and_a_failed_allocation():
    trace = parse_trace(PRE_5_12_TRACE_PIPE)
    assert trace.failed_allocs == 1
    assert [(e.kind, e.pfn, e.migratetype) for e in trace.events] == [
        ("alloc", 76016, 2), ("free", 76016, -1)]
    assert trace.migratetype_mismatches == 0   # GFP_TEMPORARY is reclaimable


def test_every_garbled_line_is_reported_with_its_number():
    text, _ = _capture(pfn_hex=True)
    lines = text.splitlines()
    assert lines[12].split(": ")[1] == "mm_page_alloc_zone_locked"  # 12 header lines
    bad_at = [13, 14, 16, 17, 19, 20, 22]
    for n in bad_at:   # an unreadable prefix, or no event line at all
        lines[n - 1] = lines[n - 1][:30] if n % 2 else "%%garbage%%"
    with pytest.raises(TraceParseError) as err:
        parse_trace(lines)
    assert [e.line_no for e in err.value.errors] == bad_at
    message = str(err.value)
    assert message.startswith("7 unreadable line(s)")
    assert "line 19:" in message and "line 20:" not in message
    assert message.endswith("... and 2 more")


def test_a_garbled_field_of_a_kept_event_is_an_error():
    text, _ = _capture(pfn_hex=False)
    lines = text.splitlines()
    lines[13] = lines[13].replace("order=0", "order=zero")
    with pytest.raises(TraceParseError) as err:
        parse_trace(lines)
    assert [(e.line_no, e.reason) for e in err.value.errors] == [
        (14, "not an integer: 'zero'")]


def test_garbled_gfp_flags_and_values_are_errors():
    base = "  a-1  [000] .... 1.000000: mm_page_alloc: page=ffffea0000000040 pfn=0x1 "
    for tail in ["order=0 migratetype=1 gfp_flags=GFP_KERNEL|bogus",
                 "order=x migratetype=1 gfp_flags=GFP_KERNEL",
                 "order=0 gfp_flags="]:
        with pytest.raises(TraceParseError):
            parse_trace([base + tail])


def test_free_of_null_page_and_missing_pfn_are_errors():
    with pytest.raises(TraceParseError, match="free of a NULL page"):
        parse_trace(["  a-1  [000] .... 1.000000: mm_page_free: page=(null) pfn=0 order=0"])
    mixed = ["[00:00:01.000000000] (+?.?????????) mm_page_free: { cpu_id = 0 }, "
             "{ page = 0xC1000000, pfn = 5, order = 0 }",
             "[00:00:01.000000001] (+0.000000001) mm_page_free: { cpu_id = 0 }, "
             "{ page = 0xC1000020, order = 0 }"]
    with pytest.raises(TraceParseError) as err:
        parse_trace(mixed)
    assert [e.line_no for e in err.value.errors] == [2]


# --- babeltrace text without date or hostname -------------------------------

def test_babeltrace_time_of_day_wraps_at_midnight():
    lines = ["[23:59:59.900000000] (+?.?????????) kmem_mm_page_alloc: "
             "{ cpu_id = 1 }, { page = 0xFFFFEA0000000040, pfn = 1, order = 0, "
             "gfp_flags = 21102794, migratetype = 1 }",
             "[00:00:00.100000000] (+0.200000000) kmem_mm_page_free: "
             "{ cpu_id = 1 }, { page = 0xFFFFEA0000000040, pfn = 1, order = 0 }"]
    trace = parse_trace(lines)
    assert [round(e.time_s, 9) for e in trace.events] == [0.0, 0.2]
    assert trace.time_origin == "23:59:59.900000000"


# --- gfp eras -----------------------------------------------------------------

@pytest.mark.parametrize("flags, era, mt", [
    (0x200DA, "3.x", 1),     # 3.10 GFP_HIGHUSER_MOVABLE (HARDWALL 0x20000)
    (0x800D0, "3.x", 2),     # 3.10 GFP_KERNEL|__GFP_RECLAIMABLE (0x80000)
    (0x80D0, "3.x", 0),      # 3.10 GFP_KERNEL|__GFP_ZERO
    (0x200DA, "4.4+", 3),    # 0x10 was __GFP_WAIT in 3.x but is RECLAIMABLE now
    (0x14200CA, "4.4+", 1),  # 4.11 GFP_HIGHUSER_MOVABLE
    (0x16012D0, "4.4+", 2),  # 4.11 ... |__GFP_RECLAIMABLE
    (0x14000C0, "4.4+", 0),  # 4.11 GFP_KERNEL
    ("GFP_HIGHUSER_MOVABLE|__GFP_COMP", "4.4+", 1),
    ("GFP_TRANSHUGE_LIGHT", "4.4+", 1),
    ("GFP_KERNEL|__GFP_RECLAIMABLE", "4.4+", 2),
    ("GFP_TEMPORARY", "3.x", 2),
    ("GFP_KERNEL|GFP_RECLAIMABLE", "3.x", 2),   # 3.x printed bits without "__"
    ("GFP_USER|GFP_MOVABLE", "3.x", 1),
    ("GFP_KERNEL|0x1000000", "4.4+", 0),
    ("GFP_NOWAIT", "3.x", 0),
    ("none", "4.4+", 0),
])
def test_gfp_migratetype_per_era(flags, era, mt):
    assert gfp_migratetype(flags, era) == mt


def test_gfp_migratetype_agrees_with_the_simulator_for_its_own_flags():
    for mask in (gfp.GFP_KERNEL, gfp.GFP_HIGHUSER_MOVABLE, gfp.GFP_TRANSHUGE,
                 gfp.GFP_KERNEL | gfp.__GFP_RECLAIMABLE):
        assert gfp_migratetype(mask, "4.4+") == gfp.gfp_migratetype(mask)
        assert gfp_migratetype(gfp_flags_to_str(mask), "4.4+") == gfp.gfp_migratetype(mask)


def test_bad_era_and_bad_token_are_rejected():
    with pytest.raises(ValueError):
        gfp_migratetype(0x08, "5.x")
    with pytest.raises(ValueError):
        gfp_migratetype("GFP_KERNEL|bogus", "4.4+")
    with pytest.raises(ValueError):
        parse_trace("", gfp_era="2.6")


def test_normalise_migratetype():
    assert [normalise_migratetype(mt, "3.x") for mt in range(5)] == [0, 2, 1, 3, 4]
    assert [normalise_migratetype(mt, "4.4+") for mt in range(5)] == [0, 1, 2, 3, 4]


# --- pairing ------------------------------------------------------------------

def _trace(*events):
    lines = []
    for kind, pfn, order in events:
        fields = fmt_mm_page_free(pfn_to_page(pfn), pfn, order)
        if kind == "alloc":
            fields = fmt_mm_page_alloc(pfn_to_page(pfn), pfn, order, 0, "GFP_KERNEL")
        lines.append(f"  a-1  [000] .... 1.000000: mm_page_{kind}: {fields}")
    return parse_trace(lines)


def test_pairing_finds_pages_in_use_before_the_capture():
    pairing = pair_events(_trace(
        ("alloc", 8, 2), ("free", 8, 2),          # paired
        ("free", 100, 1),                         # allocated before the capture
        ("alloc", 200, 1), ("free", 200, 0), ("free", 201, 0),   # split_page
        ("alloc", 300, 0), ("free", 300, 1),      # 301 was in use already
        ("alloc", 400, 0), ("alloc", 400, 0),     # second alloc of a held page
        ("free", 400, 0), ("free", 400, 0),       # second free of a freed page
        ("alloc", 500, 3),
    ))
    assert pairing.preallocated == [(100, 1), (301, 0)]
    assert pairing.double_allocs == [10] and pairing.double_frees == [12]
    assert (pairing.pfn_min, pairing.pfn_max) == (8, 507)
    assert pairing.pages_in_use_at_end == 8


def test_pairing_needs_events():
    with pytest.raises(ValueError):
        pair_events(parse_trace(""))


def test_real_x86_capture_misses_other_cpus():
    pairing = pair_events(parse_trace_file(real(X86)))
    # frees of pages allocated before the capture or on the missing CPUs
    assert len(pairing.preallocated) > 0 and len(pairing.double_allocs) > 0
    assert (pairing.pfn_min, pairing.pfn_max) == (1263890, 2241168)


def test_page_event_is_immutable():
    ev = PageEvent(1, 0.0, 0, "alloc", 5, 0, 1)
    with pytest.raises(AttributeError):
        ev.pfn = 6


@pytest.mark.parametrize("field, why", [
    ("order=11", "order 11 is not 0..10 (MAX_PAGE_ORDER)"),
    ("order=990", "order 990 is not 0..10"),
    ("pfn=0x7fffffffffffffff", "pfn 0x7fffffffffffffff is beyond 52-bit physical addresses"),
])
def test_orders_and_pfns_no_kernel_can_trace_are_line_errors(field, why):
    """Found by fuzzing the server: order=990 made a replay spin for minutes, a 2^63 pfn
    stalled the machine-size search. Both are now unreadable lines, named."""
    key = field.split("=")[0]
    line = format_line(0.0, 0, "a", 1, "mm_page_alloc", fmt_mm_page_alloc(
        pfn_to_page(4096), 4096, 0, 0, "GFP_KERNEL"))
    bad = " ".join(field if w.startswith(key + "=") else w for w in line.split(" "))
    with pytest.raises(TraceParseError) as err:
        parse_trace([line, bad])
    assert [e.line_no for e in err.value.errors] == [2]
    assert why in str(err.value)


def test_memory_needed_for_the_largest_traceable_pfn_is_found_at_once():
    """The search starts next to the answer (it used to step 4 MiB at a time)."""
    from compactsim.sim.replay import memory_needed
    pfn_max = (1 << 40) - 1
    got = memory_needed(pfn_max, 1, 64)
    pages = got // 4096
    assert pages - -(-pages * 64 // 4096) > pfn_max                 # big enough
    smaller = pages - 1024
    assert smaller - -(-smaller * 64 // 4096) <= pfn_max             # and the smallest
