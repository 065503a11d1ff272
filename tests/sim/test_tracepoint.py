"""compactsim.sim.tracepoint: kmem TP_printk formats, show_gfp_flags and the bounded buffer."""

import pytest

from compactsim.sim import gfp
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


# Expected strings worked out by hand from the 6.1 __def_gfpflag_names order
# and the 6.1 bit values (GFP_HIGHUSER_MOVABLE = 0x100cca, GFP_ATOMIC = 0xa20).
@pytest.mark.parametrize("mask, text", [
    (0, "none"),
    (0x100CCA, "GFP_HIGHUSER_MOVABLE"),
    (gfp.GFP_HIGHUSER_MOVABLE | gfp.__GFP_COMP, "GFP_HIGHUSER_MOVABLE|__GFP_COMP"),
    (gfp.GFP_TRANSHUGE, "GFP_TRANSHUGE"),
    (gfp.GFP_TRANSHUGE_LIGHT, "GFP_TRANSHUGE_LIGHT"),
    (gfp.GFP_TRANSHUGE | gfp.__GFP_NORETRY, "GFP_TRANSHUGE|__GFP_NORETRY"),
    (gfp.GFP_KERNEL, "GFP_KERNEL"),
    (gfp.GFP_KERNEL | gfp.__GFP_RECLAIMABLE, "GFP_KERNEL|__GFP_RECLAIMABLE"),
    (0xA20, "GFP_ATOMIC"),
    (gfp.GFP_NOWAIT, "GFP_NOWAIT"),
    # table order, not the order the caller wrote the bits in
    (gfp.__GFP_NORETRY | gfp.__GFP_NOWARN | gfp.GFP_KERNEL,
     "GFP_KERNEL|__GFP_NOWARN|__GFP_NORETRY"),
    # HIGH|ATOMIC without KSWAPD_RECLAIM is not GFP_ATOMIC
    (gfp.__GFP_HIGH | gfp.__GFP_ATOMIC, "__GFP_HIGH|__GFP_ATOMIC"),
    (gfp.__GFP_DIRECT_RECLAIM, "__GFP_DIRECT_RECLAIM"),
    # bits with no name are printed once, as hex, after the names
    (gfp.GFP_KERNEL | 0x3000000, "GFP_KERNEL|0x3000000"),
])
def test_gfp_flags_to_str_matches_show_gfp_flags(mask, text):
    assert gfp_flags_to_str(mask) == text


def test_gfp_flags_to_str_rejects_negative():
    with pytest.raises(ValueError):
        gfp_flags_to_str(-1)


def test_pfn_to_page_is_vmemmap_plus_64_bytes_per_page():
    assert pfn_to_page(0) == 0xFFFFEA0000000000
    assert pfn_to_page(0x1A2B3) == 0xFFFFEA000068ACC0
    with pytest.raises(ValueError):
        pfn_to_page(-1)


def test_mm_page_alloc_line_is_the_trace_pipe_layout():
    pfn = 0x1A2B3
    fields = fmt_mm_page_alloc(pfn_to_page(pfn), pfn, 0, 1,
                               gfp_flags_to_str(gfp.GFP_HIGHUSER_MOVABLE))
    line = format_line(5678.123456, 2, "<...>", 1234, "mm_page_alloc", fields)
    assert line == ("           <...>-1234    [002] .....  5678.123456: "
                    "mm_page_alloc: page=ffffea000068acc0 pfn=0x1a2b3 order=0 "
                    "migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE")


def test_pfn_printed_decimal_before_5_12():
    assert fmt_mm_page_free(pfn_to_page(107187), 107187, 3, pfn_hex=False) == (
        "page=ffffea000068acc0 pfn=107187 order=3")


def test_failed_allocation_prints_null_page_and_pfn_zero():
    assert fmt_mm_page_alloc(None, 1234, 2, 0, "GFP_KERNEL") == (
        "page=0000000000000000 pfn=0x0 order=2 migratetype=0 gfp_flags=GFP_KERNEL")


def test_other_kmem_formats():
    page = pfn_to_page(0x10)
    assert fmt_mm_page_free_batched(page, 0x10) == (
        "page=ffffea0000000400 pfn=0x10 order=0")
    assert fmt_mm_page_alloc_zone_locked(page, 0x10, 0, 2, True) == (
        "page=ffffea0000000400 pfn=0x10 order=0 migratetype=2 percpu_refill=1")
    assert fmt_mm_page_pcpu_drain(page, 0x10, 0, 1, pfn_hex=False) == (
        "page=ffffea0000000400 pfn=16 order=0 migratetype=1")


@pytest.mark.parametrize("fallback_order, fragmenting", [(10, 0), (9, 0), (3, 1)])
def test_extfrag_computes_fragmenting_like_tp_printk(fallback_order, fragmenting):
    text = fmt_mm_page_alloc_extfrag(pfn_to_page(0x13C800), 0x13C800, 0,
                                     fallback_order, 9, 0, 2, True)
    assert text == (
        f"page=ffffea0004f20000 pfn=0x13c800 alloc_order=0 "
        f"fallback_order={fallback_order} pageblock_order=9 alloc_migratetype=0 "
        f"fallback_migratetype=2 fragmenting={fragmenting} change_ownership=1")


@pytest.mark.parametrize("time_s, stamp", [
    (0.0, "    0.000000"),
    (1.0000004, "    1.000000"),    # ns2usecs rounds to the nearest microsecond
    (1.0000006, "    1.000001"),
    (123456.5, "123456.500000"),    # %5lu widens, never truncates
])
def test_timestamp_is_seconds_with_six_decimals(time_s, stamp):
    line = format_line(time_s, 0, "x", 1, "ev", "a=1")
    assert f" {stamp}: ev: a=1" in line


def test_format_line_rejects_negative_time():
    with pytest.raises(ValueError):
        format_line(-0.5, 0, "x", 1, "ev", "")


def _emit_frees(buf, pfns, event="mm_page_free"):
    for i, pfn in enumerate(pfns):
        buf.emit(i * 0.001, 0, "kworker/0:1", 42, event,
                 fmt_mm_page_free(pfn_to_page(pfn), pfn, 0))


def test_buffer_keeps_the_last_n_lines_and_counts_overwrites():
    buf = TraceBuffer(3, events=["mm_page_free"])
    _emit_frees(buf, [10, 11, 12, 13, 14])
    assert [line.split("pfn=")[1].split()[0] for line in buf.lines()] == [
        "0xc", "0xd", "0xe"]
    assert (buf.entries_in_buffer, buf.entries_written, buf.overwritten) == (3, 5, 2)


def test_buffer_below_capacity_overwrites_nothing():
    buf = TraceBuffer(10, events=["mm_page_free"])
    _emit_frees(buf, [1, 2])
    assert (buf.entries_in_buffer, buf.overwritten) == (2, 0)


def test_buffer_records_only_enabled_events():
    buf = TraceBuffer(10)
    assert buf.emit(0.0, 0, "t", 1, "mm_page_free", "x=1") is False
    buf.enable("mm_page_free", "mm_compaction_begin")
    assert buf.emit(0.0, 0, "t", 1, "mm_page_free", "x=1") is True
    assert buf.emit(0.0, 0, "t", 1, "mm_compaction_begin", "x=2") is True
    buf.disable("mm_page_free")
    assert buf.emit(0.0, 0, "t", 1, "mm_page_free", "x=3") is False
    assert not buf.is_enabled("mm_page_free")
    assert buf.entries_written == 2
    assert [line.rsplit(": ", 1)[1] for line in buf.lines()] == ["x=1", "x=2"]


def test_render_is_trace_pipe_text_or_trace_file_with_header():
    buf = TraceBuffer(2, events=["mm_page_free"])
    _emit_frees(buf, [1, 2, 3])
    assert buf.render() == "".join(line + "\n" for line in buf.lines())
    with_header = buf.render(header=True, nr_cpus=4)
    assert "# entries-in-buffer/entries-written: 2/3   #P:4\n" in with_header
    assert with_header.endswith(buf.render())
    assert all(line.startswith("#")
               for line in with_header.splitlines()[:-buf.entries_in_buffer])


def test_buffer_capacity_must_be_positive():
    with pytest.raises(ValueError):
        TraceBuffer(0)
