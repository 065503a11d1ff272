"""The layers of docs/architecture.md hold: the import contracts in pyproject.toml
([tool.importlinter]) are the ones the project means, and `lint-imports` finds them kept.

  compactsim.client | compactsim.server      (never each other)
  compactsim.codec                           (the spec codec both sides share)
  compactsim.sim | compactsim.proto          (the model: no grpc, protobuf, prometheus)

and no module imports, directly or through others, a sibling that imports it back.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["type"]: c for c in config["contracts"]}


def test_the_contracts_say_what_the_layers_are():
    by_type = contracts()
    assert by_type["layers"]["layers"] == [
        "compactsim.client | compactsim.server", "compactsim.codec",
        "compactsim.sim | compactsim.proto"]
    assert {"grpc", "google", "prometheus_client"} <= set(
        by_type["forbidden"]["forbidden_modules"])
    assert by_type["forbidden"]["source_modules"] == ["compactsim.sim"]
    assert set(by_type["acyclic_siblings"]["ancestors"]) >= {
        "compactsim.sim", "compactsim.client", "compactsim.server"}
    assert not any(c.get("ignore_imports") for c in by_type.values())


def test_the_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout
