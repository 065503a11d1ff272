"""compactsim's model of Linux physical memory management: a pure library.

`sim.run.run(config)` simulates one machine for one spec and seed and returns a
`RunResult`. Nothing here imports grpc, protobuf or prometheus_client, reads the wall
clock (except to report progress) or keeps global state.

The modules on the per-page paths are compiled by Cython at install (setup.py) from
their .py files here, with the C declarations of their .pxd files. In a source checkout
they are compiled in place, beside those files, and a compiled module older than its .py
or .pxd would silently run the old code: the import stops with the command that rebuilds
it instead.
"""

from pathlib import Path


def _check_compiled_fresh(here: Path) -> None:
    if not (here.parent / "setup.py").is_file():
        return                                   # an installed package: built as a whole
    for built in here.glob("*.so"):
        stem = built.name.split(".", 1)[0]
        for source in (here / f"{stem}.py", here / f"{stem}.pxd"):
            if source.is_file() and source.stat().st_mtime > built.stat().st_mtime:
                raise ImportError(
                    f"compactsim.sim.{stem}: {source} changed after it was compiled; "
                    "rebuild with `make .venv/.compiled` (or `python setup.py build_ext "
                    "--inplace`)")


_check_compiled_fresh(Path(__file__).resolve().parent)
