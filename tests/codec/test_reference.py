"""The spec reference is generated from the config's field metadata and kept in the repo.

docs/spec.md is what `compactsim spec` prints now (`make spec` rewrites it), it has a row
for every field of the config tree with the default and range the metadata gives, and
the README sends readers there instead of keeping a list of its own.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from compactsim.codec.reference import reference
from compactsim.codec.spec import schema
from compactsim.sim.config import PROFILES, SimConfig

ROOT = Path(__file__).resolve().parents[2]
SPEC_MD = ROOT / "docs" / "spec.md"


def sections(text: str) -> dict[str, dict[str, list[str]]]:
    """Section title -> field -> the cells of its row."""
    out: dict[str, dict[str, list[str]]] = {}
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("## "):
            rows = out.setdefault(line[3:].strip("`"), {})
        elif line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells
    return out


def config_paths(cls=SimConfig, path: str = ""):
    """(section, field name) of every field of the tree."""
    for f in schema(cls):
        yield (path or "The top level"), f.name
        if f.kind in ("message", "messages"):
            sub = (f"{path}.{f.name}" if path else f.name) + ("[]" if f.kind == "messages" else "")
            yield from config_paths(f.type, sub)


def test_docs_spec_md_is_fresh():
    assert SPEC_MD.read_text() == reference(), "docs/spec.md is stale: run `make spec`"


def test_the_command_prints_the_reference():
    out = subprocess.run([sys.executable, "-m", "compactsim.client.cli", "spec"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == reference()


def test_every_config_field_has_its_row_and_no_more():
    table = sections(reference())
    rows = {(s, f) for s, fields in table.items() if s != "Kernel profiles" for f in fields}
    assert rows == set(config_paths())


def test_rows_carry_the_metadata():
    table = sections(reference())
    _, api, kind, default, bounds, _doc = table["machine"]["memory"]
    assert (api, kind, default, bounds) == ("`memory_bytes`", "size", "`1GiB`", "64MiB..4TiB")
    assert table["The top level"]["seed"][4] == "0..2^63-1"
    assert table["The top level"]["duration"][3] == "`1m`"
    assert table["kernel"]["claim_rule"][3] == "the profile's"
    assert table["tunables"]["min_free_kbytes"][3] == "unset"
    assert table["workload[]"]["name"][3] == "required"
    assert table["workload[]"]["order_mix"][3] == "`{0: 1}`"
    assert "`arm_phone`: 70" in table["costs"]["pcp_alloc_ns"][5]
    assert table["Kernel profiles"]["movable_ops"][1:] == [
        PROFILES[p]["movable_ops"] for p in PROFILES]


def test_a_new_field_appears_with_its_metadata(monkeypatch):
    """Nothing about a field is written by hand: a field added to a config class shows
    up with the type, default, range and text its metadata gives."""
    from compactsim.codec import reference as ref
    from compactsim.sim.config import Tunables
    from compactsim.sim.schema import spec

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Wider(Tunables):
        dirty_ratio: int = spec(20, lo=1, hi=100, doc="vm.dirty_ratio")

    monkeypatch.setattr(ref, "_sections", lambda: iter([("tunables", Wider)]))
    rows = sections(ref.reference())["tunables"]
    assert rows["dirty_ratio"] == ["`dirty_ratio`", "", "integer", "`20`", "1..100",
                                   "vm.dirty_ratio"]


def test_the_readme_points_to_the_reference():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Specs", 1)[1].split("\n## ", 1)[0]
    assert "docs/spec.md" in section and "compactsim spec" in section
