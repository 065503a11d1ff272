"""The checked-in compactsim_proto/ is what `make proto` makes from proto/ now, and every
element of the API's protos carries a comment."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "compactsim_proto"

# Lines that name the generator's version, not the API: a newer grpcio-tools within the
# pinned range changes them without anything to regenerate.
_STAMPS = [
    (re.compile(r"# Protobuf Python Version: .*"), "# Protobuf Python Version: X"),
    (re.compile(r"ValidateProtobufRuntimeVersion\([^)]*\)"), "ValidateProtobufRuntimeVersion(X)"),
    (re.compile(r"GRPC_GENERATED_VERSION = '[^']*'"), "GRPC_GENERATED_VERSION = 'X'"),
]


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            text = path.read_text()
            for pattern, stamp in _STAMPS:
                text = pattern.sub(stamp, text)
            out[path.relative_to(root).as_posix()] = text
    return out


def test_generated_code_is_fresh(tmp_path):
    fresh = tmp_path / "compactsim_proto"
    subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(fresh)],
                   check=True, capture_output=True, text=True)
    want, have = _tree(fresh), _tree(PACKAGE)
    assert sorted(have) == sorted(want), "files differ: run `make proto`"
    stale = [name for name in want if have[name] != want[name]]
    assert not stale, f"stale generated files {stale}: run `make proto`"


def _generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _elements(f: descriptor_pb2.FileDescriptorProto):
    """(name, source path) of every message, field, oneof, enum, value, service, rpc."""
    def enum(e, path, prefix):
        yield prefix + e.name, path
        for i, v in enumerate(e.value):
            yield f"{prefix}{e.name}.{v.name}", (*path, 2, i)

    def message(m, path, prefix):
        yield prefix + m.name, path
        for i, x in enumerate(m.field):
            yield f"{prefix}{m.name}.{x.name}", (*path, 2, i)
        synthetic = {x.oneof_index for x in m.field if x.proto3_optional}   # `optional`
        for i, x in enumerate(m.oneof_decl):
            if i not in synthetic:
                yield f"{prefix}{m.name}.{x.name}", (*path, 8, i)
        for i, nested in enumerate(m.nested_type):
            if not nested.options.map_entry:
                yield from message(nested, (*path, 3, i), f"{prefix}{m.name}.")
        for i, e in enumerate(m.enum_type):
            yield from enum(e, (*path, 4, i), f"{prefix}{m.name}.")

    for i, m in enumerate(f.message_type):
        yield from message(m, (4, i), "")
    for i, e in enumerate(f.enum_type):
        yield from enum(e, (5, i), "")
    for i, s in enumerate(f.service):
        yield s.name, (6, i)
        for j, rpc in enumerate(s.method):
            yield f"{s.name}.{rpc.name}", (6, i, 2, j)


def test_every_proto_element_is_commented(tmp_path):
    gen = _generator()
    out = tmp_path / "api.pb"
    protos = sorted(p.relative_to(gen.PROTO_ROOT).as_posix()
                    for p in (gen.PROTO_ROOT / gen.API_DIR).glob("*.proto"))
    gen.run_protoc(["--include_source_info", f"--descriptor_set_out={out}", *protos])
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    bare = []
    for f in files:
        commented = {tuple(loc.path) for loc in f.source_code_info.location
                     if loc.leading_comments.strip()}
        bare += [f"{f.name}: {name}" for name, path in _elements(f) if path not in commented]
    assert len(files) == len(protos)
    assert not bare, f"elements without a leading comment: {bare}"
