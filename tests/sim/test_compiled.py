"""The modules setup.py compiles are the ones the installed package runs.

A build that silently left them out (no compiler, a failed Cython step, a stale list)
would still pass every other test, only several times slower: here the package must
load each listed module from a compiled extension, with its functions' kernel names and
docstrings kept. A compiled module older than its .py or .pxd in a source checkout is
refused at import, naming the rebuild. And the same .py files, run interpreted, give the
same results bit for bit.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPILED = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["compactsim"]["compiled"]


def test_the_hot_paths_are_in_the_list():
    for name in ("buddy", "pcp", "page_alloc", "workload", "migrate", "compaction"):
        assert name in COMPILED, name


@pytest.mark.parametrize("name", COMPILED)
def test_module_is_loaded_compiled(name):
    module = importlib.import_module(f"compactsim.sim.{name}")
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), \
        f"compactsim.sim.{name} runs from {module.__file__}, not from its compiled extension"
    assert isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader)


def test_compiled_functions_keep_kernel_names_and_docstrings():
    from compactsim.sim import buddy, pcp
    assert type(buddy.rmqueue_smallest).__name__ == "cython_function_or_method"
    assert buddy.rmqueue_smallest.__name__ == "rmqueue_smallest"
    assert buddy.rmqueue_smallest.__doc__.startswith("rmqueue_smallest(")
    assert "__rmqueue_smallest: the smallest free block" in buddy.rmqueue_smallest.__doc__
    assert "free_pcppages_bulk" in pcp.free_pcppages_bulk.__doc__


@pytest.mark.parametrize("newer", ["buddy.py", "buddy.pxd"])
def test_stale_compiled_module_is_refused(tmp_path, newer):
    # a copy of the checkout's sim/ whose buddy.py or buddy.pxd (its C declarations) is
    # newer than its compiled module
    pkg = tmp_path / "compactsim" / "sim"
    pkg.mkdir(parents=True)
    (tmp_path / "compactsim" / "setup.py").write_text("")
    src = ROOT / "sim"
    for f in list(src.glob("*.py")) + list(src.glob("*.pxd")) + list(src.glob("*.so")):
        (pkg / f.name).write_bytes(f.read_bytes())
    (built,) = pkg.glob("buddy.*.so")
    for f in (built, pkg / "buddy.py", pkg / "buddy.pxd"):
        os.utime(f, (1_000_000, 1_000_000))
    os.utime(pkg / newer, (2_000_000, 2_000_000))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", "import compactsim.sim"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"compactsim/sim/{newer}" in out.stderr and "build_ext --inplace" in out.stderr


RUN_SUMMARIES = """
import json, sys
from compactsim.sim.config import apply_overrides, config_from_dict
from compactsim.sim.run import run
from compactsim.sim.scenarios import load_scenario
import compactsim.sim.workload
assert compactsim.sim.workload.__file__.endswith(sys.argv[1]), compactsim.sim.workload.__file__
print(json.dumps({name: run(config_from_dict(apply_overrides(load_scenario(name),
                  ["seed=1", "duration=1s"]))).summary
                  for name in ("churn", "zram-movable-ops")}, sort_keys=True, default=float))
"""


def test_interpreted_and_compiled_runs_agree_to_the_bit(tmp_path):
    """The .py files are the one source: run without their compiled modules (a copy of
    sim/ with no extension beside it, and no editable-install finder: `python -S`), two
    presets give the same summaries as the compiled build."""
    import sysconfig

    pkg = tmp_path / "compactsim" / "sim"
    pkg.mkdir(parents=True)
    for f in (ROOT / "sim").glob("*.py"):
        (pkg / f.name).write_bytes(f.read_bytes())
    (pkg / "scenarios").mkdir()
    for f in (ROOT / "sim" / "scenarios").iterdir():
        if f.is_file():
            (pkg / "scenarios" / f.name).write_bytes(f.read_bytes())
    site = sysconfig.get_paths()["purelib"]
    outs = {}
    for label, path, args, cwd in (
            ("interpreted", f"{tmp_path}{os.pathsep}{site}", ["-S"], tmp_path),
            ("compiled", os.environ.get("PYTHONPATH", ""), [], ROOT)):
        suffix = ".py" if label == "interpreted" else importlib.machinery.EXTENSION_SUFFIXES[0]
        out = subprocess.run([sys.executable, *args, "-c", RUN_SUMMARIES, suffix],
                             cwd=cwd, env={**os.environ, "PYTHONPATH": path},
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        outs[label] = out.stdout
    assert outs["interpreted"] == outs["compiled"]
    assert '"pgalloc_normal"' in outs["compiled"]
