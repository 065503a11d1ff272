"""Parsing of the spec's durations and sizes.

Durations are `500ms`, `10s`, `2m`, `1h`, `250us` or plain seconds; sizes are `512MiB`,
`16GiB`, `4KiB`, `1TiB` or plain bytes. Both are returned as plain numbers in the unit the
name of the receiving field carries (seconds, bytes).
"""

from __future__ import annotations

import re

_DURATION = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
         "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_NUM_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_duration(value: object) -> float:
    """Seconds from `value` (a number of seconds or a string with a unit)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 10s, 2m, 1h or seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _NUM_UNIT.match(str(value))
        if not m or m.group(2) not in _DURATION and m.group(2) != "":
            raise ValueError(f"{value!r} is not a duration (use 500ms, 10s, 2m, 1h or seconds)")
        seconds = float(m.group(1)) * _DURATION[m.group(2) or "s"]
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"{value!r}: a duration cannot be negative")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `value` (a number of bytes or a string with a binary unit)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB, 16GiB or bytes")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    else:
        m = _NUM_UNIT.match(str(value))
        if not m or m.group(2) not in _SIZE:
            raise ValueError(f"{value!r} is not a size (use 512MiB, 16GiB or bytes)")
        scaled = float(m.group(1)) * _SIZE[m.group(2)]
        if not scaled.is_integer():
            raise ValueError(f"{value!r} is not a whole number of bytes")
        size = int(scaled)
    if size < 0:
        raise ValueError(f"{value!r}: a size cannot be negative")
    return size


def format_size(nbytes: int) -> str:
    """The largest binary unit that divides `nbytes` exactly (`16GiB`, `1536MiB`)."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if nbytes and nbytes % _SIZE[unit] == 0:
            return f"{nbytes // _SIZE[unit]}{unit}"
    return f"{nbytes}B"


def format_duration(seconds: float) -> str:
    """A short human form: `1h`, `2m`, `10s`, `500ms`, `250us`."""
    for unit in ("h", "m", "s", "ms", "us"):
        scaled = seconds / _DURATION[unit]
        if seconds and scaled >= 1 and abs(scaled - round(scaled)) < 1e-9:
            return f"{round(scaled)}{unit}"
    return f"{seconds:g}s"
