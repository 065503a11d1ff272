"""compactsim.sim.replay: exact self-replay, the real LTTng captures, take_block, mapping and
errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import simpy
from captures import ARM, X86, real
from hypothesis import given, settings
from hypothesis import strategies as st

from compactsim.sim.buddy import free_one_page
from compactsim.sim.config import MAX_ORDER, config_from_dict
from compactsim.sim.machine import build_machine
from compactsim.sim.page import ALLOC, PCP, TAIL
from compactsim.sim.page_alloc import free_pages
from compactsim.sim.pageblock import MIGRATE_TYPES, MigrateType
from compactsim.sim.procfs import parse_buddyinfo
from compactsim.sim.replay import memory_needed, take_block
from compactsim.sim.report import procfs_files
from compactsim.sim.run import run
from compactsim.sim.schema import ConfigError
from compactsim.sim.task import Task
from compactsim.sim.traceparse import TraceParseError, pair_events, parse_trace, parse_trace_file
from compactsim.sim.tracepoint import fmt_mm_page_alloc, fmt_mm_page_free, format_line, pfn_to_page

PAGE_EVENTS = ["mm_page_alloc", "mm_page_free"]


def _ftrace(path: Path, *events) -> Path:
    """Write (time, kind, pfn, order[, migratetype]) events as trace_pipe lines."""
    lines = []
    for time_s, kind, pfn, order, *mt in events:
        if kind == "alloc":
            fields = fmt_mm_page_alloc(pfn_to_page(pfn), pfn, order, mt[0] if mt else 0,
                                       "GFP_KERNEL")
        else:
            fields = fmt_mm_page_free(pfn_to_page(pfn), pfn, order)
        lines.append(format_line(time_s, 0, "a", 1, f"mm_page_{kind}", fields) + "\n")
    path.write_text("".join(lines))
    return path


def _replay_spec(path, *, memory="128MiB", duration=3.0, pcp=False, extra=(), **replay):
    return {"seed": 1, "duration": duration, "machine": {"memory": memory, "cpus": 2},
            "kernel": {"pcp": pcp},
            "workload": [*extra, {"name": "replay", "kind": "replay",
                                  "replay": {"path": str(path), **replay}}]}


def _page_events(trace_text: str) -> list[str]:
    """`mm_page_*: page=.. pfn=.. order=.. [migratetype=..]` of each line (no time, task
    or gfp flags: the replay asks with the flags of the migratetype), failures left out."""
    events = [line.split(": ", 1)[1].split(" gfp_flags=")[0]
              for line in trace_text.splitlines()]
    return [ev for ev in events if "page=0000000000000000" not in ev]


def _free_total(buddyinfo: str) -> int:
    return sum(n << o for z in parse_buddyinfo(buddyinfo) for o, n in enumerate(z.nr_free))


# --- 1. the simulator's own trace replays to the same free lists ----------------------

CHURN = [
    {"name": "anon", "kind": "anon", "tasks": 2, "rate": 200, "batch": 8,
     "lifetime": {"mean": "1s"}},
    {"name": "cache", "kind": "file", "rate": 800, "batch": 16, "dirty": 0.1,
     "lifetime": {"mean": "30s"}},
    {"name": "slab", "kind": "slab_unmovable", "rate": 300,
     "order_mix": {0: 0.8, 1: 0.1, 2: 0.1}, "lifetime": {"mean": "0.5s"}},
    {"name": "dentry", "kind": "slab_reclaimable", "rate": 200, "lifetime": {"mean": "0.5s"}},
    {"name": "fork", "kind": "kernel_high_order", "rate": 50, "order_mix": {2: 0.5, 3: 0.5},
     "lifetime": {"mean": "0.2s"}},
    {"name": "thp", "kind": "thp", "rate": 5, "order_mix": {9: 1}, "madvise": True,
     "lifetime": {"mean": "0.5s"}},
    {"name": "net", "kind": "netbuf", "rate": 200, "order_mix": {3: 1},
     "lifetime": {"mean": "0.1s"}},
]


@pytest.mark.slow    # a run and its replay
def test_self_replay_reproduces_buddyinfo_and_the_trace(tmp_path):
    base = {"seed": 2, "duration": 3.0, "machine": {"memory": "128MiB", "cpus": 2},
            # Compaction moves pages to targets the free scanner took without an
            # mm_page_alloc line (as the kernel does), so an exact replay needs it off.
            "kernel": {"pcp": False, "compaction": False},
            "sampling": {"trace_events": PAGE_EVENTS, "trace_buffer": 1_000_000}}
    first = run(config_from_dict({**base, "workload": CHURN}))
    v = first.summary["vmstat"]
    # the run is under pressure: reclaim frees pages, some allocations fail
    assert v["pgsteal_kswapd"] > 0 and v["pgsteal_direct"] > 0
    assert v["thp_fault_fallback"] > 0
    path = tmp_path / "own.trace"
    path.write_text(first.trace)
    own = parse_trace(first.trace)
    assert own.failed_allocs > 0
    assert pair_events(own).preallocated == []   # the buffer kept every line

    second = run(config_from_dict({**base, "duration": 4.0, "workload": [
        {"name": "replay", "kind": "replay", "replay": {"path": str(path)}}]}))
    r = second.summary["replay"][0]
    allocs = sum(ev.kind == "alloc" for ev in own.events)
    assert r["events_replayed"] == r["events"] == len(own.events)
    assert r["exact"] == r["allocs"] == allocs
    assert (r["remapped"], r["failed_allocs"], r["unknown_frees"], r["double_allocs"],
            r["preallocated"]) == (0, 0, 0, 0, 0)
    assert (r["format"], r["source"]) == ("ftrace", "own.trace")
    assert second.files["buddyinfo"] == first.files["buddyinfo"]
    # the replay's own trace repeats the original's page events, line by line
    assert _page_events(second.trace) == _page_events(first.trace)
    assert len(_page_events(first.trace)) == len(own.events)
    assert second.summary["allocations"]["replay/order0"]["attempts"] == sum(
        ev.kind == "alloc" and ev.order == 0 for ev in own.events)


# --- 2. the real LTTng captures -------------------------------------------------------

@pytest.mark.parametrize("pcp", [False, True])
@pytest.mark.parametrize("path, replay, duration", [
    (X86, {}, 4.0),
    (ARM, {"gfp_era": "3.x", "struct_page_size": 32}, 6.5),
])
def test_real_capture_replays_to_completion(path, replay, duration, pcp):
    trace = parse_trace_file(real(path), **replay)
    pairing = pair_events(trace)
    memory = memory_needed(pairing.pfn_max, 1, 64)
    assert memory <= (9 << 30)
    result = run(config_from_dict(_replay_spec(path, memory=memory, duration=duration,
                                               pcp=pcp, **replay)))
    r = result.summary["replay"][0]
    assert r["format"] == "babeltrace" and r["source"] == path.name
    assert r["events_replayed"] == len(trace.events)
    assert r["preallocated"] == r["preallocated_exact"] == len(pairing.preallocated)
    assert r["unknown_frees"] == len(pairing.double_frees)
    assert r["double_allocs"] == len(pairing.double_allocs)
    assert r["pages_held"] == pairing.pages_in_use_at_end
    # with the whole span in memory, per-cpu lists included, every block lands in place
    assert r["exact"] == r["allocs"] == sum(ev.kind == "alloc" for ev in trace.events)
    assert r["remapped"] == r["failed_allocs"] == 0
    if not pcp:
        managed = result.summary["memmap"]["managed_pages"]
        assert _free_total(result.files["buddyinfo"]) == managed - r["pages_held"]


def test_real_capture_counts_are_not_trivial():
    """The numbers the replay must match: the x86 capture misses frees (one CPU's
    stream), the ARM one starts with many pages in use."""
    x86 = pair_events(parse_trace_file(real(X86)))
    arm = pair_events(parse_trace_file(real(ARM), gfp_era="3.x", struct_page_size=32))
    assert (len(x86.preallocated), len(x86.double_allocs)) == (94, 393)
    assert (len(arm.preallocated), len(arm.double_allocs)) == (157, 0)


# --- 3. a trace that cannot run is refused before the run starts ----------------------

def test_garbled_line_refuses_the_run(tmp_path):
    path = _ftrace(tmp_path / "t.trace", (0.1, "alloc", 8, 0), (0.2, "free", 8, 0),
                   (0.3, "alloc", 16, 1))
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:40] + "\n"
    path.write_text("".join(lines))
    cfg = config_from_dict(_replay_spec(path))
    with pytest.raises(TraceParseError) as err:
        run(cfg)
    assert [e.line_no for e in err.value.errors] == [2]
    assert "line 2:" in str(err.value)


def test_trace_beyond_machine_memory_is_a_config_error(tmp_path):
    path = _ftrace(tmp_path / "t.trace", (0.1, "alloc", 8, 0), (0.2, "alloc", 40000, 0))
    anon = {"name": "anon", "kind": "anon", "rate": 10}
    with pytest.raises(ConfigError) as err:
        run(config_from_dict(_replay_spec(path, extra=[anon])))
    assert [e.path for e in err.value.errors] == ["workload[1].replay.path"]
    # 160 MiB: 40960 pages less a 640-page memmap leave pfn 40000 free; 156 MiB do not
    assert "needs at least 160 MiB of machine.memory" in str(err.value)
    assert memory_needed(40000, 1, 64) == 160 << 20
    with pytest.raises(ConfigError):
        run(config_from_dict(_replay_spec(path, memory="156MiB", duration=0.5)))
    ok = run(config_from_dict(_replay_spec(path, memory="160MiB", duration=0.5)))
    assert ok.summary["replay"][0]["exact"] == 2
    # the memmap at the top of memory is in use from boot: a trace reaching into it
    # would be replayed elsewhere, so it is refused like one beyond the end
    into_memmap = _ftrace(tmp_path / "m.trace", (0.1, "alloc", 40400, 0))
    with pytest.raises(ConfigError, match="needs at least 164 MiB"):
        run(config_from_dict(_replay_spec(into_memmap, memory="160MiB", duration=0.5)))


def test_unreadable_file_wrong_format_and_empty_trace_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"workload\[0\]\.replay\.path: cannot read"):
        run(config_from_dict(_replay_spec(tmp_path / "missing.trace")))
    path = _ftrace(tmp_path / "t.trace", (0.1, "alloc", 8, 0))
    with pytest.raises(ConfigError, match=r"workload\[0\]\.replay\.format: is babeltrace"):
        run(config_from_dict(_replay_spec(path, format="babeltrace")))
    with pytest.raises(ConfigError, match=r"workload\[0\]\.replay\.gfp_era"):
        run(config_from_dict(_replay_spec(path, gfp_era="2.6")))
    empty = tmp_path / "empty.trace"
    empty.write_text("# tracer: nop\n")
    with pytest.raises(ConfigError, match="has no mm_page_alloc"):
        run(config_from_dict(_replay_spec(empty)))


# --- the mapping: pages in use before the capture, split frees, misses ----------------

def test_capture_misses_are_counted_and_frees_follow_the_mapping(tmp_path):
    path = _ftrace(tmp_path / "t.trace",
                   (0.1, "alloc", 8, 2), (0.1, "free", 8, 2),      # paired
                   (0.2, "free", 100, 1),                          # in use before the capture
                   (0.3, "alloc", 200, 1), (0.3, "free", 200, 0),  # split_page, freed
                   (0.3, "free", 201, 0),                          # page by page
                   (0.4, "alloc", 300, 0), (0.4, "free", 300, 1),  # 301 was in use
                   (0.5, "alloc", 400, 0), (0.5, "alloc", 400, 0),  # a missed free
                   (0.6, "free", 400, 0), (0.6, "free", 400, 0),   # a repeated free
                   (0.7, "alloc", 512, 3), (0.8, "alloc", 520, 3, 1),
                   (0.9, "free", 522, 0))                          # part of a block
    pairing = pair_events(parse_trace_file(path))
    result = run(config_from_dict(_replay_spec(path)))
    r = result.summary["replay"][0]
    assert r["events_replayed"] == 15
    assert r["preallocated"] == len(pairing.preallocated) == 2
    assert r["double_allocs"] == len(pairing.double_allocs) == 1
    assert r["unknown_frees"] == len(pairing.double_frees) == 1
    assert r["split_frees"] == 2            # 200 (order 1) and 520 (order 3)
    assert r["exact"] == r["allocs"] == 7
    assert r["pages_held"] == pairing.pages_in_use_at_end == 15
    # the free lists are those of a machine where just the held blocks are taken:
    # 512 (order 3), and 520..527 but 522, split to order-0 pages when 522 went
    m = build_machine(config_from_dict(_replay_spec(path)), simpy.Environment())
    for pfn, order in [(512, 3)] + [(p, 0) for p in range(520, 528) if p != 522]:
        assert take_block(m.zones[0], pfn, order)
    assert result.files["buddyinfo"] == procfs_files(m)["buddyinfo"]


def test_blocks_not_free_are_remapped_and_freed_where_they_went(tmp_path):
    """Two groups replay one trace: the second finds the traced pages taken by the
    first and allocates elsewhere; its frees release those other blocks."""
    path = _ftrace(tmp_path / "t.trace",
                   (0.1, "free", 100, 1),
                   (0.2, "alloc", 8, 2), (0.3, "alloc", 64, 0, 1), (0.35, "alloc", 200, 0, 2),
                   (0.4, "free", 8, 2), (0.5, "free", 64, 0), (0.6, "alloc", 1024, 3))
    spec = _replay_spec(path)
    spec["workload"].append({"name": "again", "kind": "replay",
                             "replay": {"path": str(path)}})
    result = run(config_from_dict(spec))
    first, second = result.summary["replay"]
    assert first["exact"] == first["allocs"] == 4 and first["remapped"] == 0
    assert first["preallocated_exact"] == 1
    assert second["preallocated_exact"] == 0 and second["preallocated_remapped"] == 1
    assert second["remapped"] == second["allocs"] == 4 and second["exact"] == 0
    assert first["pages_held"] == second["pages_held"] == 1 + 8
    managed = result.summary["memmap"]["managed_pages"]
    assert _free_total(result.files["buddyinfo"]) == managed - 2 * 9
    assert result.summary["allocations"]["replay/order0"]["attempts"] == 4


def test_time_scale_start_and_stop(tmp_path):
    path = _ftrace(tmp_path / "t.trace", (10.0, "alloc", 8, 0), (11.0, "alloc", 16, 0),
                   (12.0, "alloc", 24, 0), (13.0, "alloc", 32, 0))
    def replayed(**group):
        spec = _replay_spec(path, duration=5.0)
        spec["workload"] = [{"name": "r", "kind": "replay", **group,
                             "replay": {"path": str(path), **group.pop("replay", {})}}]
        return run(config_from_dict(spec)).summary["replay"][0]["events_replayed"]

    assert replayed() == 4                      # run seconds 0, 1, 2, 3
    # trace seconds 10..13 -> run seconds 0.5, 2.5, 4.5, 6.5
    assert replayed(start=0.5, replay={"time_scale": 2.0}) == 3
    assert replayed(stop=1.5) == 2


# --- take_block -----------------------------------------------------------------------

def _machine(pcp=False):
    cfg = config_from_dict({"machine": {"memory": "64MiB", "cpus": 2},
                            "kernel": {"pcp": pcp},
                            "workload": [{"name": "a", "kind": "anon"}]})
    return build_machine(cfg, simpy.Environment())


def test_take_block_splits_around_the_target_as_break_down_buddy_pages():
    m = _machine()
    z = m.zones[0]
    before = list(z.nr_free)
    assert take_block(z, 5, 0)
    heads = {p: (m.mem.pstate[p] & 15, m.mem.pstate[p] >> 4)
             for p in (512, 256, 128, 64, 32, 16, 8, 0, 6, 4)}
    assert heads == {512: (9, 1), 256: (8, 1), 128: (7, 1), 64: (6, 1), 32: (5, 1),
                     16: (4, 1), 8: (3, 1), 0: (2, 1), 6: (1, 1), 4: (0, 1)}
    assert m.mem.pstate[5] == ALLOC
    assert list(z.nr_free) == [b + 1 for b in before[:MAX_ORDER]] + [before[MAX_ORDER] - 1]
    assert not take_block(z, 5, 0) and not take_block(z, 4, 1) and not take_block(z, 0, 3)
    assert not take_block(z, 6, 2)      # not aligned to its order
    free_one_page(z, 5, 0, MigrateType.MOVABLE)
    assert list(z.nr_free) == before


def test_take_block_takes_pages_off_per_cpu_lists():
    m = _machine(pcp=True)
    z = m.zones[0]
    task = Task(comm="t", pid=1, cpu=1, node=0)
    assert take_block(z, 40, 0) and take_block(z, 41, 0) and take_block(z, 42, 0)
    for pfn in (40, 41, 42):
        free_pages(m, task, pfn, 0)
    assert m.mem.pstate[41] == PCP + MigrateType.MOVABLE and z.pcp.counts[1] == 3
    assert take_block(z, 41, 0)                     # off the list
    assert m.mem.pstate[41] == ALLOC and z.pcp.counts[1] == 2
    assert not take_block(z, 41, 1)                 # not aligned: nothing moves
    assert z.pcp.counts[1] == 2
    assert not take_block(z, 40, 1)                 # 41 is in use (40 was drained)
    assert z.pcp.counts[1] == 1 and m.mem.pstate[40] < 64
    free_pages(m, task, 41, 0)
    assert take_block(z, 40, 2)                     # drained, merged, taken
    assert z.pcp.counts[1] == 0 and m.mem.pstate[40] == ALLOC + 2
    assert m.mem.pstate[44] == (MigrateType.MOVABLE << 4) | 2


def _check_free_lists(m, held: dict[int, int]) -> None:
    """Free lists, counters and memmap agree; free pages are those not held; no two
    free buddies of one order are left unmerged."""
    z = m.zones[0]
    mem = m.mem
    free_pages_seen = set()
    total = 0
    for order in range(MAX_ORDER + 1):
        count = 0
        for mt in range(MIGRATE_TYPES):
            entries = list(mem.iter_list(z.free_head[order, mt]))
            assert len(entries) == z.nr_free_mt[order, mt]
            for pfn in entries:
                assert mem.pstate[pfn] == (mt << 4) | order
                buddy = pfn ^ (1 << order)
                if order < MAX_ORDER and z.contains(buddy):
                    s = mem.pstate[buddy]
                    assert not (s < 64 and s & 15 == order), "unmerged buddies"
                free_pages_seen.update(range(pfn, pfn + (1 << order)))
            count += len(entries)
            total += len(entries) << order
        assert count == z.nr_free[order]
    assert total == z.free_pages == len(free_pages_seen)
    reserved = set(range(z.zone_end_pfn - m.nodes[0].memmap_pages, z.zone_end_pfn))
    in_use = {p for pfn, order in held.items() for p in range(pfn, pfn + (1 << order))}
    assert free_pages_seen == set(range(z.zone_start_pfn, z.zone_end_pfn)) - in_use - reserved
    for pfn, order in held.items():
        assert mem.pstate[pfn] == ALLOC + order
        assert all(mem.pstate[p] == TAIL for p in range(pfn + 1, pfn + (1 << order)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2047), st.integers(0, MAX_ORDER)),
                max_size=40))
def test_take_block_succeeds_exactly_when_the_block_is_free(steps):
    m = _machine()
    z = m.zones[0]
    held: dict[int, int] = {}
    for take, pfn, order in steps:
        if take or not held:
            pages = set(range(pfn, pfn + (1 << order)))
            free = pfn % (1 << order) == 0 and not any(
                pages & set(range(p, p + (1 << o))) for p, o in held.items())
            assert take_block(z, pfn, order) == free
            if free:
                held[pfn] = order
        else:
            victim = sorted(held)[pfn % len(held)]
            free_one_page(z, victim, held.pop(victim), MigrateType.UNMOVABLE)
        _check_free_lists(m, held)
