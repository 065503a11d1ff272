"""Building a frozen config tree from plain data, once, at the boundary.

The tree's dataclasses describe themselves: a field's type says how to read it (nested
dataclass, tuple of dataclasses, enum by name, bool, int, float, str, order->weight map)
and its metadata says the rest (`lo`/`hi` bounds, a `parse` function for durations and
sizes, `doc`). `build()` walks raw YAML/JSON data against that description and collects
every problem as a `FieldError` naming its path (`workload[1].order_mix`) and the reason,
so a bad spec is refused whole and nothing runs. A list field may also bound its length
(`max_items`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class FieldError:
    """One bad value: where it is in the spec and why it is refused."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class ConfigError(ValueError):
    """A spec that cannot run, with every field that is wrong."""

    def __init__(self, errors: list[FieldError]):
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"invalid spec ({len(self.errors)} problem"
                         f"{'s' if len(self.errors) != 1 else ''}):\n{lines}")


def spec(default: Any = dataclasses.MISSING, *, lo: float | None = None,
         hi: float | None = None, parse: Callable[[Any], Any] | None = None,
         item_parse: Callable[[Any], Any] | None = None, max_items: int | None = None,
         doc: str = "", default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with bounds, an optional parser (`item_parse` for each item of a
    list), the most items a list may hold and a description."""
    meta = {"lo": lo, "hi": hi, "parse": parse, "item_parse": item_parse,
            "max_items": max_items, "doc": doc}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _check_bounds(value: float, meta: Mapping[str, Any]) -> str | None:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo:
        return f"must be at least {lo:g}, got {value:g}"
    if hi is not None and value > hi:
        return f"must be at most {hi:g}, got {value:g}"
    return None


def _read(tp: Any, raw: Any, path: str, meta: Mapping[str, Any], errors: list[FieldError]) -> Any:
    """Convert `raw` to `tp`, appending problems to `errors`; returns None on failure."""
    tp, optional = _unwrap_optional(tp)
    if raw is None:
        if optional:
            return None
        errors.append(FieldError(path, "a value is required"))
        return None
    parse = meta.get("parse")
    if parse is not None:
        try:
            value = parse(raw)
        except ValueError as exc:
            errors.append(FieldError(path, str(exc)))
            return None
        problem = _check_bounds(value, meta) if isinstance(value, (int, float)) else None
        if problem:
            errors.append(FieldError(path, problem))
            return None
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, raw, path, errors)
    origin = typing.get_origin(tp)
    if origin is tuple and typing.get_origin(typing.get_args(tp)[0]) is tuple:
        return _read_weights(raw, path, meta, errors)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(raw, (list, tuple)):
            errors.append(FieldError(path, "expected a list"))
            return None
        most = meta.get("max_items")
        if most is not None and len(raw) > most:
            errors.append(FieldError(path, f"at most {most} items, got {len(raw)}"))
            return None
        item_meta = {"parse": meta.get("item_parse"), "lo": meta.get("lo"), "hi": meta.get("hi")}
        items = [_read(item_tp, item, f"{path}[{i}]", item_meta, errors)
                 for i, item in enumerate(raw)]
        return tuple(items)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        names = {m.name.lower(): m for m in tp}
        names.update({str(m.value).lower(): m for m in tp})
        member = names.get(str(raw).lower()) if isinstance(raw, (str, int)) else None
        if member is None:
            errors.append(FieldError(path, f"{raw!r} is not one of {', '.join(m.name for m in tp)}"))
        return member
    if tp is bool:
        if not isinstance(raw, bool):
            errors.append(FieldError(path, f"expected true or false, got {raw!r}"))
            return None
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            if isinstance(raw, float) and raw.is_integer():
                raw = int(raw)
            else:
                errors.append(FieldError(path, f"expected a whole number, got {raw!r}"))
                return None
    elif tp is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            errors.append(FieldError(path, f"expected a number, got {raw!r}"))
            return None
        raw = float(raw)
        if not math.isfinite(raw):
            errors.append(FieldError(path, f"expected a finite number, got {raw!r}"))
            return None
    elif tp is str:
        if not isinstance(raw, str):
            errors.append(FieldError(path, f"expected a string, got {raw!r}"))
            return None
        return raw
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"{path}: unsupported field type {tp!r}")
    problem = _check_bounds(raw, meta)
    if problem:
        errors.append(FieldError(path, problem))
        return None
    return raw


MAX_WEIGHT = 1e9   # an order's weight; eleven of them still sum to a finite number


def _read_weights(raw: Any, path: str, meta: Mapping[str, Any], errors: list[FieldError]) -> Any:
    """An `{order: weight}` map, e.g. `{0: 0.9, 3: 0.1}`, as a sorted tuple of pairs."""
    if not isinstance(raw, Mapping) or not raw:
        errors.append(FieldError(path, "expected a non-empty map of order: weight"))
        return None
    pairs = []
    for key, weight in raw.items():
        try:
            order = int(key)
        except (TypeError, ValueError):
            errors.append(FieldError(path, f"key {key!r} is not an order"))
            continue
        problem = _check_bounds(order, meta)
        if problem:
            errors.append(FieldError(path, f"order {order}: {problem}"))
            continue
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not 0 <= weight <= MAX_WEIGHT:
            errors.append(FieldError(path, f"order {order}: weight must be a number "
                                           f"0..{MAX_WEIGHT:g}"))
            continue
        pairs.append((order, float(weight)))
    if pairs and sum(w for _, w in pairs) <= 0:
        errors.append(FieldError(path, "the weights must not all be zero"))
    return tuple(sorted(pairs))


def build(cls: type, raw: Any, path: str, errors: list[FieldError]) -> Any:
    """An instance of dataclass `cls` from `raw`, or None with `errors` filled in.

    A class may define `defaults(raw) -> raw` (fill in values that depend on others, as
    kernel profiles do) and `check(self, path) -> list[FieldError]` for rules across fields.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path or "spec", "expected a map of keys to values"))
        return None
    if hasattr(cls, "defaults"):
        raw = cls.defaults(dict(raw), path, errors)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            errors.append(FieldError(_join(path, str(key)),
                                     f"unknown key (expected one of: {', '.join(fields)})"))
    before = len(errors)
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _read(hints[name], raw[name], _join(path, name), f.metadata, errors)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.append(FieldError(_join(path, name), "a value is required"))
    if len(errors) > before:
        return None
    obj = cls(**values)
    if hasattr(obj, "check"):
        errors.extend(obj.check(path))
    return obj


def to_plain(obj: Any) -> Any:
    """The config tree as plain data (what `build` reads back to an equal tree)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, tuple) and obj and isinstance(obj[0], tuple) and len(obj[0]) == 2 \
            and not dataclasses.is_dataclass(obj[0]):
        return {k: v for k, v in obj}
    if isinstance(obj, tuple):
        return [to_plain(x) for x in obj]
    return obj
