"""The ranges spec.proto's comments state are the ranges the config enforces, and back.

Each config field with bounds (`lo`/`hi` in sim/config.py and sim/costs.py) must have its
range written as `LO..HI` in the comment of its Spec field (or of the enclosing message,
as CostsSpec states one range for all costs), and every `A..B` a field's comment states
must be a range the config enforces: the field's bounds, or one of the limits the config
checks by rule (group count, name length, order weights). A list field's `max_items` is
stated as `at most N` or as the top of a range.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from compactsim.codec import spec as codec
from compactsim.proto.v1 import spec_pb2
from compactsim.sim.config import (
    MAX_GROUPS,
    MAX_NAME,
    MAX_ORDER,
    SimConfig,
    WorkloadGroup,
    config_from_dict,
)
from compactsim.sim.schema import MAX_WEIGHT, ConfigError

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
