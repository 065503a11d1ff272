"""Generate the `compactsim.proto` package (folder compactsim_proto/) from
proto/compactsim/v1/*.proto.

    python proto/generate.py [--out DIR]      (what `make proto` runs)

Writes messages (`*_pb2.py`), the gRPC stubs of the service (`simulator_pb2_grpc.py`)
and type stubs for both (`*.pyi`, by mypy-protobuf) to DIR (default: compactsim_proto/
at the repository root), replacing what was there. protoc names the generated modules
after the proto paths (`compactsim.v1.run_pb2`); they are renamed to live in
`compactsim.proto.v1` (pyproject.toml maps that package to the folder compactsim_proto/).
The descriptors themselves are untouched: the proto package and file names
(`compactsim/v1/run.proto`) are what reflection serves. Generated files are never edited by hand.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from google.api import field_behavior_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
API_DIR = "compactsim/v1"
SERVICE_PROTOS = ("simulator.proto",)   # the files that define services
PACKAGE = "compactsim.proto"      # the import name
FOLDER = "compactsim_proto"        # where it lives in the repository

INIT = '''"""Generated protobuf and gRPC code for the compactsim API (proto/compactsim/v1).

Produced by `make proto` (proto/generate.py); never edit these files by hand.
"""
'''
V1_INIT = '"""compactsim.v1: messages (*_pb2), service stubs (simulator_pb2_grpc)."""\n'

# `from compactsim.v1 import x_pb2`, `import compactsim.v1.x_pb2` and the module name
# given to the descriptor builder; message names never end in _pb2, so the serialized
# descriptors (".compactsim.v1.Spec") are not touched.
_MODULE = re.compile(r"\bcompactsim\.v1\.(\w+_pb2(?:_grpc)?)\b")
_FROM = re.compile(r"^from compactsim\.v1 import ", re.MULTILINE)


def _plugin(name: str) -> str:
    """A protoc plugin installed beside this interpreter (the virtual environment)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: pip install mypy-protobuf")
    return found


def run_protoc(args: list[str]) -> None:
    """Run protoc with the include paths of the API and its google imports."""
    includes = [PROTO_ROOT,
                Path(grpc_tools.__file__).parent / "_proto",        # google/protobuf
                Path(field_behavior_pb2.__file__).parent.parent.parent]  # google/api, rpc
    argv = ["grpc_tools.protoc", *(f"-I{p}" for p in includes), *args]
    if protoc.main(argv) != 0:
        raise SystemExit("protoc failed: " + " ".join(argv))


def _rename(text: str) -> str:
    text = _FROM.sub(f"from {PACKAGE}.v1 import ", text)
    return _MODULE.sub(rf"{PACKAGE}.v1.\1", text)


def generate(out: Path) -> list[Path]:
    """Write the package to `out` (replacing it); returns the files written."""
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix()
                    for p in (PROTO_ROOT / API_DIR).glob("*.proto"))
    services = [p for p in protos if Path(p).name in SERVICE_PROTOS]
    with tempfile.TemporaryDirectory() as tmp:
        mypy = f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}"
        mypy_grpc = f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}"
        run_protoc([mypy, f"--python_out={tmp}", f"--mypy_out={tmp}", *protos])
        run_protoc([mypy_grpc, f"--grpc_python_out={tmp}", f"--mypy_grpc_out={tmp}", *services])
        if out.exists():
            shutil.rmtree(out)
        (out / "v1").mkdir(parents=True)
        written = [out / "__init__.py", out / "py.typed", out / "v1" / "__init__.py"]
        written[0].write_text(INIT)
        written[1].write_text("")
        written[2].write_text(V1_INIT)
        for src in sorted((Path(tmp) / API_DIR).iterdir()):
            dst = out / "v1" / src.name
            dst.write_text(_rename(src.read_text()))
            written.append(dst)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / FOLDER, help="package directory")
    args = p.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out.parent) if args.out.parent in path.parents else path)


if __name__ == "__main__":
    main()
