"""A client-only install (`pip install compactsim`, no extras) runs every remote command.

The base install has grpc, protobuf, pyyaml and rich; SimPy and NumPy come with the `sim`
extra, matplotlib with `plot`, prometheus-client, Dask and reflection with `server`. The
command runs here in a fresh interpreter whose import system refuses those packages (and
the server's code), as if they were not installed: `--help`, the argument parsing and the
local spec checks of the remote commands, a remote call that reaches no server, the
spec reference. The commands that do need an extra say which one, with exit status 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

EXTRAS_ONLY = ("simpy", "numpy", "matplotlib", "prometheus_client", "dask", "distributed",
               "grpc_reflection", "compactsim.server")

PRELUDE = textwrap.dedent(f"""
    import importlib.abc, json, sys

    BLOCKED = {EXTRAS_ONLY!r}

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    from compactsim.client.cli import main, _parser
""")


def client_only(body: str, *args: str) -> subprocess.CompletedProcess:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=120)


def test_help_and_remote_argument_parsing_need_no_extra():
    out = client_only("""
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0
        for argv in (["run", "--scenario", "churn", "--set", "duration=2s", "--watch"],
                     ["list", "--filter", "state = SUCCEEDED"],
                     ["sweep", "create", "--scenario", "churn", "--grid",
                      "tunables.swappiness=10,60", "--seeds", "2"],
                     ["compare", "runs/a", "runs/b"], ["plot", "runs/a", "-o", "x.png"]):
            _parser().parse_args(argv)
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("compactsim."))))
    """)
    assert out.returncode == 0, out.stderr
    assert "usage: compactsim" in out.stdout
    loaded = json.loads(out.stdout.splitlines()[-1])
    assert "compactsim.client.remote" in loaded and "compactsim.sim.run" not in loaded


def test_remote_commands_run_without_extras(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("duration: 2s\nworkload:\n  - {name: a, rate: 10}\n")
    out = client_only("""
        codes = {}
        # a valid spec is checked and encoded locally, then the call finds no server (5)
        codes["run"] = main(["--server", "127.0.0.1:9", "--timeout", "2", "run", "--spec",
                             sys.argv[1], "--set", "tunables.swappiness=10"])
        # a bad one is refused locally, naming the Spec field (2)
        codes["bad"] = main(["--server", "127.0.0.1:9", "run", "--spec", sys.argv[1],
                             "--set", "machine.memory=1MiB"])
        codes["list"] = main(["--server", "127.0.0.1:9", "--timeout", "2", "list"])
        codes["scenarios"] = main(["scenarios"])
        codes["spec"] = main(["spec"])
        codes["simulate"] = main(["simulate", "--scenario", "churn", "--no-progress"])
        codes["plot"] = main(["plot", str(sys.argv[1]), "-o", "x.png"])
        print(json.dumps(codes))
    """, str(spec))
    assert out.returncode == 0, out.stderr
    codes = json.loads(out.stdout.splitlines()[-1])
    assert codes == {"run": 5, "bad": 2, "list": 5, "scenarios": 0, "spec": 0, "simulate": 2,
                     "plot": 2}
    assert "# The spec reference" in out.stdout
    assert "spec.machine.memory_bytes" in out.stderr
    assert "`simulate` needs the 'sim' extra" in out.stderr
    assert "pip install 'compactsim[sim]'" in out.stderr
    assert "`plot` needs the 'plot' extra" in out.stderr
