"""The ranges and defaults spec.proto's comments state are the config's, and back.

Each config field with bounds (`lo`/`hi` in sim/config.py and sim/costs.py) must have its
range written as `LO..HI` in the comment of its Spec field (or of the enclosing message,
as CostsSpec states one range for all costs), and every `A..B` a field's comment states
must be a range the config enforces: the field's bounds, or one of the limits the config
checks by rule (group count, name length, order weights). A list field's `max_items` is
stated as `at most N` or as the top of a range. Every field's comment states the
config's default (`Default X`), except where there is none to state: a kernel switch takes
the profile's value, and a field whose default is unset says what unset means.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from compactsim.codec import spec as codec
from compactsim.proto.v1 import spec_pb2
from compactsim.sim.config import (
    DEFAULT_PROFILE,
    MAX_GROUPS,
    MAX_NAME,
    MAX_ORDER,
    PROFILES,
    KernelConfig,
    SimConfig,
    WorkloadGroup,
    config_from_dict,
)
from compactsim.sim.schema import MAX_WEIGHT, ConfigError
from compactsim.sim.units import parse_size

PROTO = str(Path(__file__).resolve().parents[2] / "proto" / "compactsim" / "v1" / "spec.proto")

_NUM = r"\d+(?:\.\d+)?(?:e[-+]?\d+)?(?:\^\d+(?:-1)?)?(?: ?[KMGT]iB)?"
_RANGE = re.compile(rf"(?:({_NUM}) or )?({_NUM})\.\.({_NUM})|({_NUM}) or ({_NUM})\b")
_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}

# Ranges the config checks by rule rather than by a field's lo/hi: (message, field) ->
# ranges the comment may state.
BY_RULE = {
    ("Spec", "workload"): {(1, MAX_GROUPS)},
    ("WorkloadGroupSpec", "name"): {(1, MAX_NAME)},
    ("WorkloadGroupSpec", "order_mix"): {(0, MAX_ORDER), (0, MAX_WEIGHT)},
}


def number(text: str) -> float:
    text = text.replace(" ", "")
    unit = next((u for u in _UNITS if text.endswith(u)), None)
    if unit:
        return number(text[:-len(unit)]) * _UNITS[unit]
    if "^" in text:
        base, _, exp = text.partition("^")
        minus_one = exp.endswith("-1")
        value = int(base) ** int(exp.removesuffix("-1"))
        return value - 1 if minus_one else value
    return float(text)


def stated_ranges(comment: str) -> set[tuple[float, float]]:
    out = set()
    for m in _RANGE.finditer(comment):
        if m.group(4):                                   # "0 or 1"
            out.add((number(m.group(4)), number(m.group(5))))
        else:                                            # "[0 or ]8..2^20"
            lo = m.group(1) or m.group(2)
            out.add((number(lo), number(m.group(3))))
    return out


def proto_comments() -> tuple[dict, dict]:
    """(message, field) -> the comment above the field; message -> its own comment."""
    fields, messages, comment, message = {}, {}, [], None
    for line in open(PROTO).read().splitlines():
        line = line.strip()
        if line.startswith("//"):
            comment.append(line[2:].strip())
            continue
        if m := re.match(r"message (\w+) \{", line):
            message = m.group(1)
            messages[message] = " ".join(comment)
        elif m := re.match(r"(?:optional |repeated )?(?:map<[^>]+>|[\w.]+) (\w+) = \d+;", line):
            fields[(message, m.group(1))] = " ".join(comment)
        comment = []
    return fields, messages


def bounded_fields():
    """(message, proto field name, lo, hi, max_items) for every config field."""
    todo = [(SimConfig, spec_pb2.Spec.DESCRIPTOR)]
    while todo:
        cls, desc = todo.pop()
        meta = {f.name: f.metadata for f in dataclasses.fields(cls)}
        for f in codec.schema(cls):
            fd = desc.fields_by_name[f.proto]
            m = meta[f.name]
            yield desc.name, f.proto, m.get("lo"), m.get("hi"), m.get("max_items")
            if f.kind in ("message", "messages"):
                todo.append((f.type, fd.message_type))


FIELDS = sorted(bounded_fields())


def test_the_proto_comments_are_found():
    fields, _ = proto_comments()
    assert len(fields) > 100
    assert stated_ranges(fields[("Spec", "seed")]) == {(0, 2**63 - 1)}
    assert stated_ranges(fields[("MachineSpec", "memory_bytes")]) == {(64 << 20, 4 << 40)}
    assert stated_ranges(fields[("TunablesSpec", "percpu_pagelist_high_fraction")]) \
        == {(0, 1 << 20)}


@pytest.mark.parametrize("message,field,lo,hi,max_items", FIELDS,
                         ids=[f"{m}.{f}" for m, f, *_ in FIELDS])
def test_stated_range_is_the_enforced_range(message, field, lo, hi, max_items):
    fields, messages = proto_comments()
    comment = fields[(message, field)]
    stated = stated_ranges(comment)
    if not stated and hi is not None:                  # one range for the whole message
        stated = stated_ranges(messages[message])
    enforced = BY_RULE.get((message, field), set())
    if hi is not None:
        enforced = enforced | {(lo, hi)}
        assert (lo, hi) in stated, f"{message}.{field}: {lo:g}..{hi:g} is not stated in " \
                                   f"{comment!r}"
    assert stated <= enforced, f"{message}.{field}: {comment!r} states {stated}, the " \
                               f"config enforces {enforced}"
    if max_items is not None:
        assert f"at most {max_items}" in comment or any(b == max_items for _, b in stated)


def test_lists_and_names_are_bounded_as_stated():
    group = {"name": "g", "rate": 10}
    ok = {"workload": [dict(group, name=f"g{i}") for i in range(MAX_GROUPS)]}
    config_from_dict(ok)
    cases = {
        "workload": {"workload": [dict(group, name=f"g{i}") for i in range(MAX_GROUPS + 1)]},
        "workload[0].name": {"workload": [dict(group, name="n" * (MAX_NAME + 1))]},
        "workload[1].name": {"workload": [group, dict(group, name="a\x00b")]},
        "workload[2].name": {"workload": [group, dict(group, name="x"),
                                          dict(group, name="")]},
        "workload[0].order_mix": {"workload": [dict(group, order_mix={0: MAX_WEIGHT * 2})]},
        "compact_memory": {"workload": [group], "compact_memory": [1.0] * 1001},
        "sampling.trace_events": {"workload": [group],
                                  "sampling": {"trace_events": ["mm_page_alloc"] * 65}},
    }
    for path, raw in cases.items():
        with pytest.raises(ConfigError) as exc:
            config_from_dict(raw)
        assert [e.path for e in exc.value.errors] == [path], raw
    named = WorkloadGroup(name="n" * MAX_NAME, rate=1.0)
    assert named.check("workload[0]") == []
    weights = config_from_dict({"workload": [dict(group, order_mix={
        o: MAX_WEIGHT for o in range(MAX_ORDER + 1)})]})
    assert sum(w for _, w in weights.workload[0].order_mix) == (MAX_ORDER + 1) * MAX_WEIGHT


# ---- defaults ------------------------------------------------------------------------

_DEFAULT = re.compile(r"(?:^|\s)(?:x86 )?[Dd]efault:?\s+"
                      r"(\"[^\"]*\"|[^.;(]+?(?:\.\d+)?)\s*(?:[.;(]|$)")
_UNSET = re.compile(r"(?:Unset|Empty): (\{[^}]*\}|\w+ only)")


def stated_default(comment: str) -> str | None:
    """The default a field's comment states: `Default X.`, `x86 default X.`, the clause
    `X ... (the default)`, or for a list or map `Unset: X only.` / `Empty: {...}.`."""
    if m := _DEFAULT.search(comment):
        return m.group(1).strip()
    if m := _UNSET.search(comment):
        return m.group(1).removesuffix(" only")
    for clause in re.split(r"[.;]\s", comment):
        if "(the default)" in clause:
            return clause.split()[0]
    return None


def stated_value(text: str, f: dataclasses.Field, kind: str, tp: type) -> object:
    """`text` read as the config reads a value of field `f`."""
    text = text.strip('"')
    if kind == "list":
        return () if text == "none" else tuple(text.split(", "))
    if kind == "weights":
        return tuple((int(k), float(w)) for k, w in yaml.safe_load(text).items())
    if kind == "enum":
        return next(m for m in tp if text.lower() in (m.name.lower(), str(m.value).lower()))
    if tp is bool:
        return {"true": True, "false": False}[text]
    if tp is str:
        return text
    if f.metadata.get("parse") is parse_size:
        return parse_size(text.replace(" ", ""))
    return number(text)


def defaulted_fields():
    """(message, proto field, dataclass field, kind, type, profile switch) of every scalar,
    enum and list field of the config."""
    todo = [(SimConfig, spec_pb2.Spec.DESCRIPTOR)]
    while todo:
        cls, desc = todo.pop()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for sf in codec.schema(cls):
            fd = desc.fields_by_name[sf.proto]
            if sf.kind in ("message", "messages"):
                todo.append((sf.type, fd.message_type))
                continue
            switch = cls is KernelConfig and sf.name in PROFILES[DEFAULT_PROFILE]
            yield desc.name, sf.proto, fields[sf.name], sf.kind, sf.type, switch


DEFAULTED = sorted(defaulted_fields(), key=lambda row: row[:2])


@pytest.mark.parametrize("message,field,f,kind,tp,switch", DEFAULTED,
                         ids=[f"{m}.{p}" for m, p, *_ in DEFAULTED])
def test_stated_default_is_the_configs_default(message, field, f, kind, tp, switch):
    fields, messages = proto_comments()
    comment = fields[(message, field)]
    stated = stated_default(comment)
    if switch:        # a mechanism switch: the profile decides (KernelSpec's comment says so)
        assert stated is None, f"{message}.{field}: states {stated!r}, the profile decides"
        assert "profile" in messages[message]
        return
    if f.default is None or f.default is dataclasses.MISSING:
        assert stated is None, f"{message}.{field}: states {stated!r}; the config has none"
        return
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if message == "CostsSpec" and stated is None:        # "x86 default" or the message's
        pytest.fail(f"{message}.{field}: {comment!r} states no default")
    assert stated is not None, f"{message}.{field}: {comment!r} states no default ({default!r})"
    assert stated_value(stated, f, kind, tp) == default, \
        f"{message}.{field}: {comment!r} states {stated!r}, the config's default is {default!r}"


def test_defaults_are_read_from_the_comments():
    assert stated_default("Seed of every random stream, 0..2^63-1. Default 1.") == "1"
    assert stated_default("Bytes of RAM per node, 64 MiB..4 TiB. Default 1 GiB.") == "1 GiB"
    assert stated_default("Resolution, 1e-4..10. Default 0.01.") == "0.01"
    assert stated_default('Bit layout: "3.x" or "4.4+". Default "4.4+".') == '"4.4+"'
    assert stated_default("zram disksize, 0..4 TiB; 0 (the default) means no zram.") == "0"
    assert stated_default("Local flush of one PTE, ns. x86 default 100.") == "100"
    assert stated_default("ZONES_WIDTH, 0..3. Default 3 (DMA, DMA32).") == "3"
    assert stated_default("At most 64. Unset: mm_page_alloc_extfrag only.") == \
        "mm_page_alloc_extfrag"
    assert stated_default("Order -> weight. Empty: {0: 1}. THP: order 9.") == "{0: 1}"
    assert stated_default("vm.min_free_kbytes. Unset: the kernel's formula.") is None
