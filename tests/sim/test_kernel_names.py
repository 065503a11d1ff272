"""The model's entry points carry the kernel's names, so that a kernel reader's grep finds
them: mm/compaction.c `kcompactd_do_work`, `kcompactd_node_suitable`,
`compact_lock_irqsave`; mm/page_alloc.c `__alloc_pages_slowpath` (spelt without the
leading underscores, which Python would mangle inside a class); `enum compact_result` and
`enum compact_priority` (include/linux/compaction.h) live with compaction; and the
migration step of `compact_zone` answers with migrate_pages()'s error, not a string."""

from __future__ import annotations

import enum

from compactsim.sim import compaction, kcompactd, slowpath


def test_compaction_enums_live_in_the_compaction_module():
    assert compaction.CompactResult.__module__ == "compactsim.sim.compaction"
    assert compaction.CompactPriority.__module__ == "compactsim.sim.compaction"
    # enum compact_result's 6.x order and compact_priority's values
    assert [r.name for r in compaction.CompactResult] == [
        "NOT_SUITABLE_ZONE", "SKIPPED", "DEFERRED", "NO_SUITABLE_PAGE", "CONTINUE",
        "COMPLETE", "PARTIAL_SKIPPED", "CONTENDED", "SUCCESS"]
    assert [(p.name, int(p)) for p in compaction.CompactPriority] == [
        ("SYNC_FULL", 0), ("SYNC_LIGHT", 1), ("ASYNC", 2)]


def test_kcompactd_entry_points_have_kernel_names():
    kc = kcompactd.Kcompactd
    assert callable(getattr(kc, "kcompactd_do_work", None))
    assert callable(getattr(kc, "kcompactd_node_suitable", None))
    assert not hasattr(kc, "do_work") and not hasattr(kc, "node_suitable")


def test_slowpath_and_lock_have_kernel_names():
    assert callable(getattr(slowpath.Allocator, "alloc_pages_slowpath", None))
    assert not hasattr(slowpath.Allocator, "_slowpath")
    assert callable(getattr(compaction.Compaction, "compact_lock_irqsave", None))
    assert not hasattr(compaction.Compaction, "compact_lock")


def test_migrate_step_returns_migrate_pages_error_enum():
    err = compaction.MigrateError
    assert issubclass(err, enum.Enum)
    # migrate_pages(): 0, the count of pages not migrated (>0), or -ENOMEM
    assert {e.name for e in err} == {"NONE", "FAILED", "ENOMEM"}
    assert not err.NONE and err.FAILED and err.ENOMEM
