"""Common random numbers: the same seed gives every arm the same requests.

Two arms that the simulated kernel makes behave differently (movable-ops designs; kernel
profiles) must still ask for the same k-th request of every task: the same orders, page
lifetimes and page states, block by block, wherever both arms issued that request.
"""

import pytest

from compactsim.sim import run as run_module
from compactsim.sim.config import apply_overrides, config_from_dict
from compactsim.sim.run import run
from compactsim.sim.scenarios import load_scenario
from compactsim.sim.workload import Workload


def _requests(monkeypatch, *overrides):
    """{(task key, request index[, "fallback"]), block): (order, lifetime s, states)} of a
    25 s zram-movable-ops run (pressure from about 15 s), and its vmstat."""
    logs = []

    def workload(*args, **kwargs):
        w = Workload(*args, **kwargs)
        w.block_log = []
        logs.append(w.block_log)
        return w

    monkeypatch.setattr(run_module, "Workload", workload)
    spec = apply_overrides(load_scenario("zram-movable-ops"), ["duration=25s", *overrides])
    result = run(config_from_dict(spec))
    (log,) = logs
    blocks = {}
    for key, block, order, seconds, states in log:
        assert (key, block) not in blocks, "a request's block was set up twice"
        blocks[key, block] = (order, seconds, states)
    return blocks, result.summary["vmstat"]


@pytest.mark.parametrize("a, b", [
    (("kernel.movable_ops=NONE",), ("kernel.movable_ops=MAPPING_OPS",)),
    (("kernel.profile=v4.12",), ("kernel.profile=v6.10",)),
])
def test_same_seed_same_requests_across_arms(monkeypatch, a, b):
    first, vm_a = _requests(monkeypatch, *a)
    second, vm_b = _requests(monkeypatch, *b)
    assert vm_a != vm_b, "the arms must behave differently for the check to mean anything"
    common = first.keys() & second.keys()
    # Most requests were issued in both arms (each arm's end cuts its own tail).
    assert len(common) > 0.8 * min(len(first), len(second)) > 10_000
    groups = {key[0][0] for key in common}
    assert groups >= {"apps", "pagecache", "fork", "thp"}
    different = [k for k in common if first[k] != second[k]]
    assert different == []
    # the page states are drawn (pagecache dirties 2 % of its pages) and orders vary (fork)
    assert any(first[k][2] for k in common if k[0][0] == "pagecache")
    assert {first[k][0] for k in common if k[0][0] == "fork"} == {2, 3}
