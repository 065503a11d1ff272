"""The config boundary: defaults, profiles, overrides, units and field-naming errors."""

import pytest

from compactsim.sim.config import (
    ClaimRule,
    MovableOps,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_spec,
)
from compactsim.sim.schema import ConfigError
from compactsim.sim.units import parse_duration, parse_size

BASE = {"workload": [{"name": "a"}]}


def paths(exc: ConfigError) -> list[str]:
    return [e.path for e in exc.errors]


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("10s", 10), ("2m", 120),
                                          ("1h", 3600), (7, 7.0), ("250us", 250e-6)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,nbytes", [("512MiB", 512 << 20), ("16GiB", 16 << 30),
                                         (4096, 4096), ("1TiB", 1 << 40)])
def test_sizes(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("bad", ["10 parsecs", "-1s", "abc", True])
def test_bad_duration_is_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_kernel_defaults_and_limits():
    cfg = config_from_dict(BASE)
    assert cfg.tunables.watermark_scale_factor == 10
    assert cfg.tunables.watermark_boost_factor == 15000
    assert cfg.tunables.extfrag_threshold == 500
    assert cfg.tunables.compaction_proactiveness == 20
    assert cfg.tunables.min_free_kbytes is None


def test_profile_fills_switches_and_spec_wins():
    old = config_from_dict({**BASE, "kernel": {"profile": "v4.4"}})
    assert old.kernel.claim_rule is ClaimRule.FREE_COUNT
    assert old.kernel.movable_ops is MovableOps.NONE
    assert not old.kernel.watermark_boost and not old.kernel.scaled_watermarks
    mixed = config_from_dict({**BASE, "kernel": {"profile": "v4.4", "movable_ops": "PAGE_TYPE"}})
    assert mixed.kernel.movable_ops is MovableOps.PAGE_TYPE
    assert mixed.kernel.claim_rule is ClaimRule.FREE_COUNT


def test_every_bad_field_is_named_and_nothing_is_built():
    raw = {"duration": "soon", "machine": {"memory": "102MiB"},
           "tunables": {"extfrag_threshold": 1001, "nonsense": 1},
           "workload": [{"name": "a"}, {"name": "b", "order_mix": {11: 1.0}, "kind": "bogus"},
                        {"name": "a", "stop": "1s", "start": "2s"}]}
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    got = set(paths(info.value))
    assert {"duration", "tunables.extfrag_threshold", "tunables.nonsense",
            "workload[1].order_mix", "workload[1].kind", "workload[2].stop"} <= got
    # machine.memory is not a multiple of 4 MiB: named by the cross-field check
    assert "machine.memory" in got
    assert "workload[2].stop" in str(info.value)


def test_duplicate_group_names_are_refused():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"workload": [{"name": "x"}, {"name": "x"}]})
    assert paths(info.value) == ["workload[1].name"]


def test_overrides_apply_by_path():
    raw = apply_overrides({"workload": [{"name": "a"}, {"name": "b"}]},
                          ["workload[1].rate=5", "tunables.swappiness=10",
                           "kernel.movable_ops=NONE", "duration=2m"])
    cfg = config_from_dict(raw)
    assert cfg.workload[1].rate == 5.0
    assert cfg.tunables.swappiness == 10
    assert cfg.kernel.movable_ops is MovableOps.NONE
    assert cfg.duration == 120.0


def test_override_errors_name_the_path():
    with pytest.raises(ConfigError) as info:
        apply_overrides(BASE, ["workload[3].rate=5", "justtext"])
    assert paths(info.value) == ["workload[3].rate", "justtext"]


def test_round_trip_through_plain_data():
    cfg = config_from_dict({**BASE, "machine": {"memory": "2GiB", "dma32": "1GiB"},
                            "costs": {"preset": "arm_phone"}})
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert cfg.costs.clear_page_us > 0.3      # the phone preset scales clearing


def test_yaml_spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("seed: 3\nworkload:\n  - name: a\n    kind: file\n")
    cfg = config_from_dict(load_spec(path))
    assert cfg.seed == 3 and cfg.workload[0].kind.value == "file"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError):
        load_spec(path)
