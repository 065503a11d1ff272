"""The wheel installs one import namespace, compactsim.*, and nothing under a generic name.

A lab's environment may hold other packages called `sim`, `server` or `client`; the wheel
of this repository must not shadow them. Built for real (setuptools, no isolation: the
test environment already has the build backend) and read as pip would install it.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_holds_only_the_compactsim_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("compactsim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"compactsim"}, tops
    # compactsim is a namespace: no __init__ at the top, its packages below it
    assert "compactsim/__init__.py" not in names
    for pkg in ("sim", "codec", "server", "client", "proto", "proto/v1", "sim/scenarios"):
        assert f"compactsim/{pkg}/__init__.py" in names, pkg
    assert any(n.startswith("compactsim/sim/scenarios/") and n.endswith(".yaml") for n in names)
    assert "compactsim/proto/py.typed" in names
    # the hot modules as compiled extensions (setup.py), beside their .py sources
    for name in ("buddy", "pcp", "page_alloc", "workload", "migrate", "compaction"):
        assert any(n.startswith(f"compactsim/sim/{name}.cpython-") and n.endswith(".so")
                   for n in names), name
        assert f"compactsim/sim/{name}.py" in names, name
    assert not any(n.endswith(".c") for n in names)
    # generated code refers to itself by the installed name
    grpc_stub = zipfile.ZipFile(wheel).read("compactsim/proto/v1/simulator_pb2_grpc.py").decode()
    assert "compactsim_proto" not in grpc_stub and "compactsim.proto.v1" in grpc_stub
