"""server/convert.py: config -> proto -> config round trips, a proto field for every
config field, presence semantics, config errors as BadRequest, result messages."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import math
import types
import typing

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compactsim.codec import spec as codec
from compactsim.proto.v1 import run_pb2, simulator_pb2, simulator_pb2_grpc, spec_pb2
from compactsim.server import convert, rpc_errors
from compactsim.sim.config import (
    MAX_ORDER,
    MIN_PACE,
    PAGEBLOCK_ORDER,
    PROFILES,
    TRACE_EVENTS,
    Arrival,
    LifetimeConfig,
    MachineConfig,
    MovableOps,
    PageKind,
    ReplayConfig,
    SamplingConfig,
    SimConfig,
    Tunables,
    WorkloadGroup,
    apply_overrides,
    config_from_dict,
)
from compactsim.sim.costs import Costs
from compactsim.sim.run import run
from compactsim.sim.scenarios import list_scenarios, load_scenario
from compactsim.sim.schema import ConfigError
from compactsim.sim.units import parse_duration, parse_size

MiB = 1 << 20

# ---- strategies: valid config trees, built from the dataclass fields ----------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
NAMES = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).filter(str.isprintable)
STRINGS = {"profile": st.sampled_from(sorted(PROFILES)),
           "gfp_era": st.sampled_from(["3.x", "4.4+"]), "path": TEXT}


def _optional(tp: typing.Any) -> tuple[typing.Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None)), True
    return tp, False


def field_strategy(f: dataclasses.Field, tp: typing.Any) -> st.SearchStrategy:
    """Any value the config accepts for field `f` on its own (bounds from its metadata)."""
    tp, optional = _optional(tp)
    lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
    if dataclasses.is_dataclass(tp):
        s = configs(tp)
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        s = st.sampled_from(list(tp))
    elif tp is bool:
        s = st.booleans()
    elif tp is int:
        s = st.integers(int(lo), int(hi))
    elif tp is float:
        s = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    elif tp is str:
        s = STRINGS[f.name]
    elif typing.get_origin(typing.get_args(tp)[0]) is tuple:        # order: weight
        s = st.dictionaries(st.integers(lo, hi), st.floats(0.0, 1e6), min_size=1) \
            .filter(lambda d: sum(d.values()) > 0).map(lambda d: tuple(sorted(d.items())))
    else:                                                            # trace_events
        s = st.lists(st.sampled_from(TRACE_EVENTS), max_size=4).map(tuple)
    return st.none() | s if optional else s


def configs(cls: type, **fixed: st.SearchStrategy) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {f.name: fixed[f.name] if f.name in fixed else field_strategy(f, hints[f.name])
              for f in dataclasses.fields(cls)
              if f.name not in ("workload", "compact_memory", "zram_compact")}
    return st.builds(cls, **fields)


# Rules across fields (the configs' check() methods), as strategies.
@st.composite
def machines(draw) -> MachineConfig:
    nodes = draw(st.integers(1, 4))
    memory = draw(st.integers(16, 1 << 20)) * 4 * MiB
    dma32 = draw(st.integers(0, min(memory // (4 * MiB) - 1, 1024))) * 4 * MiB
    return draw(configs(MachineConfig, nodes=st.just(nodes), memory=st.just(memory),
                        dma32=st.just(dma32), cpus=st.integers(nodes, 1024)))


def tunables() -> st.SearchStrategy:
    high_fraction = st.just(0) | st.integers(8, 1 << 20)
    return configs(Tunables, percpu_pagelist_high_fraction=high_fraction)


@st.composite
def groups(draw, name: str) -> WorkloadGroup:
    kind = draw(st.sampled_from(list(PageKind)))
    pattern = draw(st.sampled_from(list(Arrival)))
    rate = draw(st.floats(0.0 if pattern is Arrival.FILL else 1e-3, 1e9))
    start = draw(st.floats(0.0, 1e6))
    stop = draw(st.none() | st.floats(start, 365 * 86400.0).filter(lambda t: t > start))
    fixed = {"name": st.just(name), "kind": st.just(kind), "pattern": st.just(pattern),
             "rate": st.just(rate), "start": st.just(start), "stop": st.just(stop),
             "replay": configs(ReplayConfig) if kind is PageKind.REPLAY else st.none()}
    if kind is PageKind.THP:
        fixed["order_mix"] = st.floats(1e-3, 1e6).map(lambda w: ((PAGEBLOCK_ORDER, w),))
    else:
        fixed["unmap"] = st.just(0.0)         # only THP groups unmap part of a block
    return draw(configs(WorkloadGroup, **fixed))


@st.composite
def sim_configs(draw) -> SimConfig:
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    duration = draw(st.floats(1e-3, 30 * 86400.0))
    cfg = draw(configs(SimConfig, duration=st.just(duration), machine=machines(),
                       tunables=tunables(),
                       pace=st.just(0.0) | st.floats(MIN_PACE, 1e9)))   # 0 or MIN_PACE..
    return dataclasses.replace(
        cfg, workload=tuple(draw(groups(n)) for n in names),
        compact_memory=tuple(draw(st.lists(st.floats(0.0, duration), max_size=3))),
        zram_compact=tuple(draw(st.lists(st.floats(0.0, duration), max_size=3))))


@pytest.mark.slow
@given(sim_configs())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_config_round_trips_through_proto(cfg):
    spec = convert.spec_to_proto(cfg)
    assert convert.config_from_proto(spec) == cfg
    wire = spec_pb2.Spec.FromString(spec.SerializeToString())
    assert convert.config_from_proto(wire) == cfg
    assert convert.spec_sha256(convert.config_from_proto(wire)) == convert.spec_sha256(cfg)
    assert convert.spec_sha256(dataclasses.replace(cfg, seed=cfg.seed ^ 1)) \
        != convert.spec_sha256(cfg)


@pytest.mark.parametrize("name", sorted(list_scenarios()))
def test_scenarios_map_with_only_the_fields_they_set(name):
    raw = load_scenario(name)
    spec = convert.spec_from_dict(raw)
    assert convert.config_from_proto(spec) == config_from_dict(raw)
    assert convert.raw_from_proto(spec).keys() == raw.keys()
    kernel_set = {f.name for f, _ in spec.kernel.ListFields()}
    assert kernel_set == set(raw.get("kernel") or {}), "profile switches stay unset"


# ---- every config field has its proto field ------------------------------------------

SCALARS = {bool: {FieldDescriptor.TYPE_BOOL}, float: {FieldDescriptor.TYPE_DOUBLE},
           str: {FieldDescriptor.TYPE_STRING},
           int: {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64}}


def expected_name(f: dataclasses.Field) -> str:
    parse = f.metadata.get("parse") or f.metadata.get("item_parse")
    return f.name + {parse_size: "_bytes", parse_duration: "_seconds"}.get(parse, "")


def walk(cls: type, desc, path: str = ""):
    """(config path, field, type, proto field) for every field of the tree."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        fd = desc.fields_by_name.get(expected_name(f))
        tp, _ = _optional(hints[f.name])
        yield f"{path}{f.name}", f, tp, fd
        if fd is None:
            continue
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        if dataclasses.is_dataclass(item):
            yield from walk(item, fd.message_type, f"{path}{f.name}.")


def test_every_config_field_has_a_proto_field():
    missing, wrong = [], []
    seen: dict[str, set[str]] = {}
    for path, f, tp, fd in walk(SimConfig, spec_pb2.Spec.DESCRIPTOR):
        if fd is None:
            missing.append(f"{path} (expected {expected_name(f)})")
            continue
        seen.setdefault(fd.containing_type.full_name, set()).add(fd.name)
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None
        if dataclasses.is_dataclass(tp):
            ok = fd.message_type is not None and not fd.is_repeated
        elif item is not None and dataclasses.is_dataclass(item):
            ok = fd.is_repeated and fd.message_type is not None
        elif item is not None and typing.get_origin(item) is tuple:   # order -> weight
            ok = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        elif item is not None:                # a list; wrapped when empty != unset
            wrapper = fd.message_type is not None and not fd.is_repeated
            ok = [x.name for x in fd.message_type.fields] == ["names"] if wrapper \
                else fd.is_repeated and fd.message_type is None
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            ok = fd.enum_type is not None and fd.enum_type.values[0].number == 0
        else:
            ok = fd.type in SCALARS[tp] and fd.has_presence
        if not ok:
            wrong.append(path)
    assert not missing, f"config fields without a proto field: {missing}"
    assert not wrong, f"proto fields of the wrong kind or without presence: {wrong}"
    for full_name, names in seen.items():                 # and nothing extra in the proto
        desc = spec_pb2.DESCRIPTOR.pool.FindMessageTypeByName(full_name)
        assert {x.name for x in desc.fields} == names, full_name


def test_enum_maps_are_complete_and_pair_like_names():
    used = {tp for _, _, tp, _ in walk(SimConfig, spec_pb2.Spec.DESCRIPTOR)
            if isinstance(tp, type) and issubclass(tp, enum.Enum)}
    assert used == set(codec.ENUMS)
    for tp, table in codec.ENUMS.items():
        assert set(table) == set(tp), tp
        enum_desc = spec_pb2.DESCRIPTOR.enum_types_by_name[
            {"Lifetime": "LifetimeDistribution"}.get(tp.__name__, tp.__name__)]
        prefix = enum_desc.values[0].name.removesuffix("UNSPECIFIED")
        assert {v.number for v in enum_desc.values} - {0} == set(table.values())
        for member, number in table.items():
            assert enum_desc.values_by_number[number].name == prefix + member.name


# ---- presence: unset fields take defaults, profiles and formulas ----------------------

def minimal(**kw) -> spec_pb2.Spec:
    spec = spec_pb2.Spec(**kw)
    spec.workload.add(name="a")
    return spec


def test_unset_fields_take_defaults_and_the_profile():
    cfg = convert.config_from_proto(minimal(kernel=spec_pb2.KernelSpec(profile="v4.4")))
    assert cfg == config_from_dict({"kernel": {"profile": "v4.4"}, "workload": [{"name": "a"}]})
    assert cfg.kernel.movable_ops is MovableOps.NONE and not cfg.kernel.kcompactd
    assert cfg.tunables.min_free_kbytes is None and cfg.workload[0].stop is None
    assert cfg.sampling.trace_events == SamplingConfig().trace_events
    assert cfg.workload[0].lifetime == LifetimeConfig() and cfg.costs == Costs()


def test_set_fields_win_over_the_profile_and_empty_lists_differ_from_unset():
    spec = minimal(kernel=spec_pb2.KernelSpec(profile="v4.4", kcompactd=True,
                                              movable_ops=spec_pb2.MOVABLE_OPS_PAGE_TYPE))
    spec.sampling.trace_events.SetInParent()
    spec.tunables.min_free_kbytes = 4096
    cfg = convert.config_from_proto(spec)
    assert cfg.kernel == dataclasses.replace(
        config_from_dict({"kernel": {"profile": "v4.4"}, "workload": [{"name": "a"}]}).kernel,
        kcompactd=True, movable_ops=MovableOps.PAGE_TYPE)
    assert cfg.sampling.trace_events == () and cfg.tunables.min_free_kbytes == 4096


def test_a_spec_over_a_scenario_is_like_set_overrides():
    base = load_scenario("zram-movable-ops")
    spec = spec_pb2.Spec(kernel=spec_pb2.KernelSpec(movable_ops=spec_pb2.MOVABLE_OPS_NONE),
                         duration_seconds=5)
    expected = config_from_dict(apply_overrides(base, ["kernel.movable_ops=NONE",
                                                       "duration=5s"]))
    assert convert.config_from_proto(spec, base=base) == expected


# ---- errors ----------------------------------------------------------------------------

def violations(status) -> dict[str, str]:
    assert status.code == code_pb2.INVALID_ARGUMENT
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    return {v.field: v.description for v in detail.field_violations}


def bad_request_status(error, prefix="spec"):
    """The servicer's refusal of a spec: a BadRequest violation per bad field."""
    return rpc_errors.bad_request(rpc_errors.config_violations(error, prefix)).status


def test_bad_fields_are_each_named_in_a_bad_request():
    spec = spec_pb2.Spec(machine=spec_pb2.MachineSpec(memory_bytes=102 * MiB),
                         tunables=spec_pb2.TunablesSpec(compaction_proactiveness=101),
                         kernel=spec_pb2.KernelSpec(movable_ops=99))
    spec.workload.add(name="a", order_mix={MAX_ORDER + 1: 1.0})
    spec.workload.add(name="b").lifetime.mean_seconds = -1
    spec.workload.add(name="c", kind=spec_pb2.PAGE_KIND_REPLAY)
    with pytest.raises(ConfigError) as err:
        convert.config_from_proto(spec)
    found = violations(bad_request_status(err.value))
    assert set(found) == {"spec.machine.memory_bytes", "spec.tunables.compaction_proactiveness",
                          "spec.kernel.movable_ops", "spec.workload[0].order_mix",
                          "spec.workload[1].lifetime.mean_seconds", "spec.workload[2].replay"}
    assert "4MiB" in found["spec.machine.memory_bytes"]
    assert "100" in found["spec.tunables.compaction_proactiveness"]


def test_rules_across_fields_name_spec_paths():
    spec = minimal(duration_seconds=10, compact_memory_seconds=[1, 11])
    spec.workload.add(name="a")
    spec.sampling.trace_events.names.extend(["mm_page_alloc", "mm_bogus"])
    with pytest.raises(ConfigError) as err:
        convert.config_from_proto(spec)
    assert set(violations(bad_request_status(err.value))) == {
        "spec.compact_memory_seconds[1]", "spec.workload[1].name",
        "spec.sampling.trace_events.names[1]"}
    with pytest.raises(ConfigError) as err:
        convert.config_from_proto(spec_pb2.Spec())
    assert set(violations(bad_request_status(err.value))) == {"spec.workload"}


def test_bad_request_survives_a_real_channel():
    """The servicer pattern: validate, then abort with the rich status."""

    class Servicer(simulator_pb2_grpc.SimulatorServicer):
        async def CreateRun(self, request, context):
            try:
                convert.config_from_proto(request.run.spec)
            except ConfigError as exc:
                await context.abort_with_status(
                    rpc_status.to_status(bad_request_status(exc, "run.spec")))
            return run_pb2.Run(name="runs/x", state=run_pb2.Run.QUEUED)

    async def call():
        server = grpc.aio.server()
        simulator_pb2_grpc.add_SimulatorServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = simulator_pb2_grpc.SimulatorStub(channel)
                ok = await stub.CreateRun(simulator_pb2.CreateRunRequest(
                    run=run_pb2.Run(spec=minimal())))
                bad = minimal(seed=2**63)
                bad.workload[0].rate = math.nan
                try:
                    await stub.CreateRun(simulator_pb2.CreateRunRequest(run=run_pb2.Run(spec=bad)))
                except grpc.aio.AioRpcError as exc:
                    return ok, exc
        finally:
            await server.stop(None)

    ok, exc = asyncio.run(call())
    assert ok.state == run_pb2.Run.QUEUED
    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(exc)
    assert set(violations(status)) == {"run.spec.seed", "run.spec.workload[0].rate"}


# ---- results ---------------------------------------------------------------------------

def test_result_messages():
    raw = apply_overrides(load_scenario("churn"), ["duration=1s", "machine.memory=64MiB"])
    result = run(config_from_dict(raw))
    report = convert.report_to_proto("runs/r1/report", result, full=True)
    assert {f.name for f in report.procfs_files} >= {"buddyinfo", "pagetypeinfo", "vmstat"}
    assert report.summary["vmstat"]["pgfree"] == result.summary["vmstat"]["pgfree"]
    assert [h.name for h in report.histograms] == sorted(result.latency)
    for h in report.histograms:
        assert sum(b.count for b in h.buckets) == h.count == result.latency[h.name].n
    # what a worker sends (plain data, through JSON in the store) makes the same messages
    from compactsim.server.worker import histograms_message
    sent = json.loads(json.dumps(histograms_message(result.latency)))
    assert sent and all(h["buckets"] for h in sent.values())
    assert convert.histograms_from_message(sent) == list(report.histograms)
    assert report.trace == result.trace
    assert convert.report_to_proto("runs/r1/report", result).trace == ""
    columns, samples = convert.series_to_proto(result.series)
    assert len(samples) == len(result.series) and "time_s" not in columns
    assert all(len(s.values) == len(columns) for s in samples)
    assert samples[-1].values[columns.index("pgfree")] == result.series[-1]["pgfree"]
