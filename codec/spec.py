"""The spec codec: the one mapping between the API's Spec message
(`compactsim.proto.v1.spec_pb2`) and the simulator's config tree (`compactsim.sim.config`).

The spec messages mirror the config dataclasses field for field, under the same names,
except that a size (a field read with `parse_size`) is bytes named `<name>_bytes` and a
duration (`parse_duration`) is seconds named `<name>_seconds`. So the mapping walks the
dataclasses, and only the enums are mapped by explicit tables. Scalar spec fields have
presence: an unset field is left out of the raw data, so the config's default applies
(or the kernel profile's value, or None for "the kernel's formula"), and the spec is
validated once, by `compactsim.sim.config.config_from_dict`.

Both sides use it: the server to read requests and write effective specs, the client to
build and check a Spec before sending it. It depends only on the config and the generated
messages (no grpc, no server code), so neither side depends on the other.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from compactsim.proto.v1 import spec_pb2
from compactsim.sim.config import (
    Arrival,
    ClaimRule,
    ContendedAbort,
    Lifetime,
    MovableOps,
    PageKind,
    PcpFree,
    PcpHigh,
    SimConfig,
    ThpDefrag,
    ThpEnabled,
    TraceEra,
    TraceFormat,
    ZramAlgorithm,
    ZsmallocLocking,
    config_from_dict,
)
from compactsim.sim.costs import CostPreset
from compactsim.sim.schema import ConfigError, FieldError
from compactsim.sim.units import parse_duration, parse_size

_UNIT_SUFFIX: dict[Any, str] = {parse_size: "_bytes", parse_duration: "_seconds"}

ENUMS: dict[type[enum.Enum], dict[Any, int]] = {
    MovableOps: {
        MovableOps.NONE: spec_pb2.MOVABLE_OPS_NONE,
        MovableOps.PAGE_FLAG_CALLBACKS: spec_pb2.MOVABLE_OPS_PAGE_FLAG_CALLBACKS,
        MovableOps.MAPPING_OPS: spec_pb2.MOVABLE_OPS_MAPPING_OPS,
        MovableOps.PAGE_TYPE: spec_pb2.MOVABLE_OPS_PAGE_TYPE,
    },
    ClaimRule: {
        ClaimRule.FREE_COUNT: spec_pb2.CLAIM_RULE_FREE_COUNT,
        ClaimRule.IN_USE_COUNT: spec_pb2.CLAIM_RULE_IN_USE_COUNT,
        ClaimRule.FREELIST_HYGIENE: spec_pb2.CLAIM_RULE_FREELIST_HYGIENE,
    },
    TraceEra: {
        TraceEra.V4_4: spec_pb2.TRACE_ERA_V4_4,
        TraceEra.V4_8: spec_pb2.TRACE_ERA_V4_8,
    },
    PcpHigh: {
        PcpHigh.BATCH_X6: spec_pb2.PCP_HIGH_BATCH_X6,
        PcpHigh.ZONE_LOW: spec_pb2.PCP_HIGH_ZONE_LOW,
    },
    PcpFree: {
        PcpFree.BATCH_FREE: spec_pb2.PCP_FREE_BATCH_FREE,
        PcpFree.WHOLE_LIST: spec_pb2.PCP_FREE_WHOLE_LIST,
    },
    ZsmallocLocking: {
        ZsmallocLocking.CLASS_LOCK: spec_pb2.ZSMALLOC_LOCKING_CLASS_LOCK,
        ZsmallocLocking.MIGRATE_LOCK: spec_pb2.ZSMALLOC_LOCKING_MIGRATE_LOCK,
        ZsmallocLocking.POOL_LOCK: spec_pb2.ZSMALLOC_LOCKING_POOL_LOCK,
        ZsmallocLocking.ZSPAGE_TRYLOCK: spec_pb2.ZSMALLOC_LOCKING_ZSPAGE_TRYLOCK,
    },
    ContendedAbort: {
        ContendedAbort.IMMEDIATE: spec_pb2.CONTENDED_ABORT_IMMEDIATE,
        ContendedAbort.FINISH_BLOCK: spec_pb2.CONTENDED_ABORT_FINISH_BLOCK,
    },
    ThpDefrag: {
        ThpDefrag.ALWAYS: spec_pb2.THP_DEFRAG_ALWAYS,
        ThpDefrag.DEFER: spec_pb2.THP_DEFRAG_DEFER,
        ThpDefrag.DEFER_MADVISE: spec_pb2.THP_DEFRAG_DEFER_MADVISE,
        ThpDefrag.MADVISE: spec_pb2.THP_DEFRAG_MADVISE,
        ThpDefrag.NEVER: spec_pb2.THP_DEFRAG_NEVER,
    },
    ThpEnabled: {
        ThpEnabled.ALWAYS: spec_pb2.THP_ENABLED_ALWAYS,
        ThpEnabled.MADVISE: spec_pb2.THP_ENABLED_MADVISE,
        ThpEnabled.NEVER: spec_pb2.THP_ENABLED_NEVER,
    },
    PageKind: {
        PageKind.FILE: spec_pb2.PAGE_KIND_FILE,
        PageKind.ANON: spec_pb2.PAGE_KIND_ANON,
        PageKind.THP: spec_pb2.PAGE_KIND_THP,
        PageKind.SLAB_RECLAIMABLE: spec_pb2.PAGE_KIND_SLAB_RECLAIMABLE,
        PageKind.SLAB_UNMOVABLE: spec_pb2.PAGE_KIND_SLAB_UNMOVABLE,
        PageKind.KERNEL_HIGH_ORDER: spec_pb2.PAGE_KIND_KERNEL_HIGH_ORDER,
        PageKind.NETBUF: spec_pb2.PAGE_KIND_NETBUF,
        PageKind.ZSMALLOC: spec_pb2.PAGE_KIND_ZSMALLOC,
        PageKind.BALLOON: spec_pb2.PAGE_KIND_BALLOON,
        PageKind.PINNED: spec_pb2.PAGE_KIND_PINNED,
        PageKind.REPLAY: spec_pb2.PAGE_KIND_REPLAY,
    },
    Arrival: {
        Arrival.POISSON: spec_pb2.ARRIVAL_POISSON,
        Arrival.PERIODIC: spec_pb2.ARRIVAL_PERIODIC,
        Arrival.BURST: spec_pb2.ARRIVAL_BURST,
        Arrival.FILL: spec_pb2.ARRIVAL_FILL,
    },
    Lifetime: {
        Lifetime.EXPONENTIAL: spec_pb2.LIFETIME_DISTRIBUTION_EXPONENTIAL,
        Lifetime.FIXED: spec_pb2.LIFETIME_DISTRIBUTION_FIXED,
        Lifetime.UNIFORM: spec_pb2.LIFETIME_DISTRIBUTION_UNIFORM,
        Lifetime.LOGNORMAL: spec_pb2.LIFETIME_DISTRIBUTION_LOGNORMAL,
        Lifetime.FOREVER: spec_pb2.LIFETIME_DISTRIBUTION_FOREVER,
    },
    ZramAlgorithm: {
        ZramAlgorithm.LZ4: spec_pb2.ZRAM_ALGORITHM_LZ4,
        ZramAlgorithm.LZO: spec_pb2.ZRAM_ALGORITHM_LZO,
        ZramAlgorithm.ZSTD: spec_pb2.ZRAM_ALGORITHM_ZSTD,
    },
    TraceFormat: {
        TraceFormat.AUTO: spec_pb2.TRACE_FORMAT_AUTO,
        TraceFormat.FTRACE: spec_pb2.TRACE_FORMAT_FTRACE,
        TraceFormat.BABELTRACE: spec_pb2.TRACE_FORMAT_BABELTRACE,
    },
    CostPreset: {
        CostPreset.X86_SERVER: spec_pb2.COST_PRESET_X86_SERVER,
        CostPreset.ARM_PHONE: spec_pb2.COST_PRESET_ARM_PHONE,
    },
}
_ENUM_NAMES = {tp: {number: member.name for member, number in table.items()}
               for tp, table in ENUMS.items()}


# ---- the shape of the config tree --------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Field:
    """One config field and how it maps: `kind` is message, messages (a list of
    messages), weights (order -> weight), list (of scalars), enum or scalar."""

    name: str
    proto: str
    kind: str
    type: Any


def proto_name(f: dataclasses.Field) -> str:
    """The spec message's name for config field `f` (`memory` -> `memory_bytes`)."""
    parse = f.metadata.get("parse") or f.metadata.get("item_parse")
    return f.name + _UNIT_SUFFIX.get(parse, "")


def _kind(tp: Any) -> tuple[str, Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):     # X | None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "message", tp
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if typing.get_origin(item) is tuple:
            return "weights", None
        return ("messages", item) if dataclasses.is_dataclass(item) else ("list", item)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "enum", tp
    return "scalar", tp


@functools.cache
def schema(cls: Any) -> tuple[_Field, ...]:
    """The fields of config dataclass `cls` with their spec names and kinds."""
    hints = typing.get_type_hints(cls)
    return tuple(_Field(f.name, proto_name(f), *_kind(hints[f.name]))
                 for f in dataclasses.fields(cls))


def _wrapped(container: Any) -> Any:
    """A list field's values: repeated directly, or inside a wrapper message (whose
    presence tells "unset" from "empty", as TracepointList does)."""
    if isinstance(container, Message):
        wrapper: Any = container        # any wrapper message: its one field is `names`
        return wrapper.names
    return container


# ---- config -> spec ------------------------------------------------------------------

def _fill(msg: Message, obj: Any, only: Mapping[str, Any] | None) -> None:
    """Set `msg` from dataclass `obj`: every field, or with `only` the keys it has."""
    msg.SetInParent()
    cls: Any = type(obj)
    for f in schema(cls):
        value = getattr(obj, f.name)
        if value is None or (only is not None and f.name not in only):
            continue
        sub = None if only is None else (only[f.name] or {})
        target = getattr(msg, f.proto)
        if f.kind == "message":
            _fill(target, value, sub)
        elif f.kind == "messages":
            for i, item in enumerate(value):
                _fill(target.add(), item, None if sub is None else sub[i])
        elif f.kind == "weights":
            target.update(dict(value))
        elif f.kind == "list":
            if isinstance(target, Message):
                target.SetInParent()
            _wrapped(target).extend(value)
        elif f.kind == "enum":
            setattr(msg, f.proto, ENUMS[f.type][value])
        else:
            setattr(msg, f.proto, value)


def spec_to_proto(cfg: SimConfig) -> spec_pb2.Spec:
    """The whole config as a Spec, every field set (an effective spec)."""
    spec = spec_pb2.Spec()
    _fill(spec, cfg, None)
    return spec


def spec_sha256(cfg: SimConfig) -> str:
    """Hex SHA-256 of the effective spec, deterministically serialized (Provenance)."""
    return hashlib.sha256(spec_to_proto(cfg).SerializeToString(deterministic=True)).hexdigest()


def spec_from_dict(raw: Mapping[str, Any]) -> spec_pb2.Spec:
    """A Spec with just the fields `raw` (YAML spec data, e.g. a scenario) sets, so that
    unset fields keep their default and profile semantics. Raises ConfigError (config
    paths) if `raw` is not a valid spec on its own."""
    spec = spec_pb2.Spec()
    _fill(spec, config_from_dict(raw), raw)
    return spec


# ---- spec -> config ------------------------------------------------------------------

def _raw(msg: Message, cls: type) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for f in schema(cls):
        value = getattr(msg, f.proto)
        if f.kind == "messages":
            if value:
                raw[f.name] = [_raw(item, f.type) for item in value]
        elif f.kind == "weights":
            if value:
                raw[f.name] = dict(value)
        elif f.kind == "list":
            if msg.HasField(f.proto) if isinstance(value, Message) else value:
                raw[f.name] = list(_wrapped(value))
        elif f.kind == "enum":
            if value:   # an unknown number goes through, for the config to refuse
                raw[f.name] = _ENUM_NAMES[f.type].get(value, value)
        elif msg.HasField(f.proto):
            raw[f.name] = _raw(value, f.type) if f.kind == "message" else value
    return raw


def raw_from_proto(spec: spec_pb2.Spec) -> dict[str, Any]:
    """The fields `spec` sets, as raw spec data with the config's names (what YAML spec
    files hold and `sim.config.apply_overrides` edits)."""
    return _raw(spec, SimConfig)


def merge_raw(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Raw spec data `over` laid over `base`: maps merge key by key, anything else
    (lists included) replaces."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = merge_raw(out[key], value) if both else value
    return out


def _max_items(cls: type, name: str, kind: str) -> int:
    meta = next(f for f in dataclasses.fields(cls) if f.name == name).metadata
    if kind == "weights":                  # one weight per order, lo..hi
        return int(meta["hi"] - meta["lo"]) + 1
    return int(meta["max_items"])


def oversized(msg: Message, cls: type = SimConfig, path: str = "") -> list[FieldError]:
    """The repeated fields and maps of `msg` (a Spec, at any depth) holding more items
    than the config allows, counted on the message itself: a request is refused on these
    before anything is converted (a 200 KB spec can hold 100 000 empty workload groups).
    Paths are Spec field paths."""
    out = []
    for f in schema(cls):
        if f.kind == "message":
            if msg.HasField(f.proto):
                out += oversized(getattr(msg, f.proto), f.type, _join(path, f.proto))
            continue
        if f.kind not in ("messages", "list", "weights"):
            continue
        value = getattr(msg, f.proto)
        items = _wrapped(value)
        here = _join(path, f.proto + (".names" if isinstance(value, Message) else ""))
        limit = _max_items(cls, f.name, f.kind)
        if len(items) > limit:
            out.append(FieldError(here, f"{len(items)} items; at most {limit}"))
        elif f.kind == "messages":
            for i, item in enumerate(items):
                out += oversized(item, f.type, f"{here}[{i}]")
    return out


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def config_from_proto(spec: spec_pb2.Spec,
                      base: Mapping[str, Any] | None = None) -> SimConfig:
    """The validated config of `spec`; with `base` (raw data, e.g. a scenario), the
    fields `spec` sets override base's (maps merge, lists replace). Raises ConfigError
    whose paths are Spec field paths (`machine.memory_bytes`, `workload[2].order_mix`);
    a repeated field over its bound is refused before any conversion (`oversized`)."""
    too_many = oversized(spec)
    if too_many:
        raise ConfigError(too_many)
    raw = raw_from_proto(spec)
    try:
        return config_from_dict(merge_raw(base, raw) if base else raw)
    except ConfigError as exc:
        raise ConfigError([FieldError(proto_path(e.path), e.reason)
                           for e in exc.errors]) from exc


_STEP = re.compile(r"^(\w+)((?:\[\d+\])*)$")


def proto_path(path: str) -> str:
    """A config field path as a Spec field path: `machine.memory` -> `machine.memory_bytes`,
    `sampling.trace_events[1]` -> `sampling.trace_events.names[1]`; parts that name no
    field are kept."""
    cls: Any = SimConfig
    desc: Any = spec_pb2.Spec.DESCRIPTOR
    out = []
    for part in path.split("."):
        m = _STEP.match(part)
        field = next((f for f in schema(cls) if f.name == m.group(1)), None) \
            if m and cls is not None else None
        if field is None or m is None:
            out.append(part)
            cls = None
            continue
        fd = desc.fields_by_name[field.proto]
        wrapped = field.kind == "list" and fd.message_type is not None
        out.append(field.proto + (".names" if wrapped else "") + m.group(2))
        nested = field.kind in ("message", "messages")
        cls, desc = (field.type, fd.message_type) if nested else (None, None)
    return ".".join(out)
