"""Per-cpu list sizes per era (mm/page_alloc.c `zone_batchsize`, 4.x
`pageset_set_high_and_batch`, 5.14+ `zone_highsize`).

A 4.x x86_64 DMA32 zone of 406,974 managed pages shows `high: 186` and `batch: 31` in
/proc/zoneinfo (512 KiB batch cap, high = 6 * batch); since 4.19 the cap is 1 MiB
(batch 63) and since 5.14 high is the zone's LOW watermark shared over the node's CPUs.
"""

from __future__ import annotations

import pytest
import simpy

from compactsim.sim.config import config_from_dict
from compactsim.sim.machine import build_machine
from compactsim.sim.zone import WMARK_LOW, zone_batchsize


def zone_of(profile: str, memory: str = "2GiB", cpus: int = 8):
    cfg = config_from_dict({"machine": {"memory": memory, "cpus": cpus},
                            "kernel": {"profile": profile},
                            "tunables": {"thp_enabled": "never"},
                            "workload": [{"name": "x"}]})
    return build_machine(cfg, simpy.Environment()).zones[0]


def test_batch_cap_per_era():
    assert zone_batchsize(406_974, 512) == 31
    assert zone_batchsize(406_974, 1024) == 63
    assert zone_batchsize(32_768, 512) == zone_batchsize(32_768, 1024) == 7


@pytest.mark.parametrize("profile", ["v4.4", "v4.8", "v4.12"])
def test_4x_profiles_size_pcp_as_4x_zoneinfo_shows(profile):
    z = zone_of(profile)
    assert (z.pcp.batch, z.pcp.high) == (31, 186)


def test_5_0_has_the_1mib_batch_and_6x_batch_high():
    z = zone_of("v5.0")
    assert (z.pcp.batch, z.pcp.high) == (63, 378)


@pytest.mark.parametrize("profile", ["v6.1", "v6.10", "v6.17"])
def test_6x_profiles_share_the_low_watermark_over_the_cpus(profile):
    z = zone_of(profile)
    assert z.pcp.batch == 63
    assert z.pcp.high == max(z.watermark[WMARK_LOW] // 8, 4 * 63)
