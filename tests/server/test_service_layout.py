"""The servicer reads like the gRPC examples: every RPC a handler of a few lines that names
the work; checking requests, building refusals and mapping records to messages happen in
modules of their own (server.requests, server.rpc_errors, server.mapping)."""

import ast
from pathlib import Path

from compactsim.proto.v1 import simulator_pb2

SERVICE = Path(__file__).resolve().parents[2] / "server" / "service.py"
RPCS = {m.name for m in simulator_pb2.DESCRIPTOR.services_by_name["Simulator"].methods}
MAX_STATEMENTS = 8      # statements in a handler, nested ones included
MAX_LINES = 12
# What builds refusals, checks fields or builds messages; the servicer names none of it.
ERROR_BUILDERS = {"bad_request", "not_found", "precondition", "quota", "already_exists",
                  "not_owner", "failure", "status", "check_quota", "config_violations",
                  "RpcFailure"}
FORBIDDEN_MODULES = ("re", "json", "google.rpc", "google.protobuf",
                     "compactsim.server.convert", "compactsim.server.filters",
                     "compactsim.server.sweeps", "compactsim.codec")


def tree() -> ast.Module:
    return ast.parse(SERVICE.read_text())


def servicer(module: ast.Module) -> ast.ClassDef:
    (cls,) = [n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "Simulator"]
    return cls


def test_every_rpc_has_a_short_handler():
    handlers = {f.name: f for f in servicer(tree()).body
                if isinstance(f, ast.AsyncFunctionDef) and f.name in RPCS}
    assert set(handlers) == RPCS
    long = {}
    for name, fn in handlers.items():
        body = fn.body[1:] if ast.get_docstring(fn) else fn.body
        statements = sum(isinstance(n, ast.stmt) for s in body for n in ast.walk(s))
        lines = fn.end_lineno - fn.lineno
        if statements > MAX_STATEMENTS or lines > MAX_LINES:
            long[name] = (statements, lines)
    assert long == {}


def test_the_servicer_has_no_private_work_of_its_own():
    """Besides the handlers, the servicer holds only its plumbing: running a call in a
    thread, the caller, and shutting down."""
    methods = {f.name for f in servicer(tree()).body
               if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert methods - RPCS <= {"__init__", "_call", "_call_as", "_caller", "closing",
                              "refuse_new_runs", "end_watches"}
    module_functions = [n.name for n in tree().body
                        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    assert module_functions == []


def test_no_validation_error_building_or_mapping_in_the_servicer():
    module = tree()
    modules, names = set(), set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module)
            names |= {a.name for a in node.names}
    assert {m for m in modules if m.startswith(FORBIDDEN_MODULES)} == set()
    assert names & ERROR_BUILDERS <= {"RpcFailure"}   # caught, never raised
    called = {n.func.id if isinstance(n.func, ast.Name) else n.func.attr
              for n in ast.walk(module) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Name | ast.Attribute)}
    assert called & ERROR_BUILDERS == set()
    # no message built here: the only *_pb2 module is the generated servicer base
    pb2 = {n.value.id for n in ast.walk(module) if isinstance(n, ast.Attribute)
           and isinstance(n.value, ast.Name) and n.value.id.endswith("_pb2")}
    assert pb2 == set()
    raises = [n.lineno for n in ast.walk(module) if isinstance(n, ast.Raise)]
    assert raises == []
