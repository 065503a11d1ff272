"""The pageblock-mix check's explanation describes the model as it is: unmovable and
reclaimable memory also comes from what the workload groups' activity implies
(sim/kernelmem.py), not only from the explicit slab and fork groups."""

from validation.checks.production import PAGEBLOCK_MIX

KEYS = ("nonmovable_memory_share", "blocks_holding_nonmovable_share",
        "blocks_nonmovable_label_share", "movable_blocks_mixed_share", "extfrag_events",
        "extfrag_claims")


def test_explanation_names_the_implicit_kernel_memory():
    # Every fallback claimed its block: the observation about grouping is made.
    results = {"v6.1": [{key: 44.0 for key in KEYS}]}
    text = " ".join(PAGEBLOCK_MIX.explain(results))
    assert "44 of 44 fallbacks claimed their whole block" in text
    assert "no page tables" not in text
    assert "comes only from" not in text
    for implied in ("sim/kernelmem.py", "page tables", "sk_buff", "stacks"):
        assert implied in text
    assert "sim/kernelmem.py" in PAGEBLOCK_MIX.mechanism
