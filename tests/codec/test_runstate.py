"""The run lifecycle is defined once (compactsim.codec.runstate): the API's enum spells the
same states with numbers in lifecycle order, and no module of the client, the codec or the
server spells a set of states (a terminal set, the filter's names, a transition table) of
its own, which is how the copies drifted apart before."""

import ast
from pathlib import Path

import pytest

from compactsim.codec.runstate import NAMES, TERMINAL, TERMINAL_PROTO, TRANSITIONS, RunState
from compactsim.proto.v1 import run_pb2
from compactsim.server import filters, store

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = ROOT / "codec" / "runstate.py"


def test_proto_enum_spells_run_state_in_lifecycle_order():
    enum = run_pb2.Run.State
    assert [n for n in enum.keys() if n != "STATE_UNSPECIFIED"] == [s.value for s in RunState]
    assert [s.proto for s in RunState] == list(range(1, len(RunState) + 1))
    assert enum.Value("STATE_UNSPECIFIED") == 0


def test_lifecycle():
    assert {s.value for s in TERMINAL} == {"SUCCEEDED", "FAILED", "CANCELLED"}
    assert TERMINAL_PROTO == {run_pb2.Run.SUCCEEDED, run_pb2.Run.FAILED,
                              run_pb2.Run.CANCELLED}
    assert [s.value for s in RunState if s.has_worker] == ["RUNNING", "CANCELLING"]
    # every state but QUEUED is reached from QUEUED; nothing leads back to QUEUED
    reached, todo = set(), [RunState.QUEUED]
    while todo:
        for nxt in TRANSITIONS[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert reached == set(RunState) - {RunState.QUEUED}


def test_filter_and_store_use_the_one_definition(tmp_path):
    with pytest.raises(filters.FilterError) as e:
        filters.compile_filter("state = PAUSED")
    assert ", ".join(NAMES) in str(e.value)
    for name in NAMES:
        assert filters.compile_filter(f"state = {name}").params == (name,)
    # the store sorts by the lifecycle order and its CHECK takes exactly these names
    with store.RunStore(tmp_path / "s.db") as s:
        for state in RunState:
            rid = s.create_run({})[0].id
            for step in _path_to(state):
                s.update_state(rid, step)
        runs, _ = s.list_runs(order_by="state")
        assert [r.state for r in runs] == list(RunState)


def _path_to(state: RunState) -> list[RunState]:
    """The states a new run passes through to reach `state`, QUEUED excluded."""
    paths = {(): RunState.QUEUED}
    frontier = [()]
    while frontier:
        path = frontier.pop(0)
        if paths[path] is state:
            return list(path)
        for nxt in sorted(TRANSITIONS[paths[path]]):
            paths[(*path, nxt)] = nxt
            frontier.append((*path, nxt))
    raise AssertionError(state)


def _state_sets(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines of tuple, list, set or dict displays holding two or more run states, as
    strings ("FAILED") or as attributes (RunState.FAILED, Run.FAILED)."""
    def is_state(node: ast.AST | None) -> bool:
        return ((isinstance(node, ast.Constant) and node.value in names)
                or (isinstance(node, ast.Attribute) and node.attr in names)
                or (isinstance(node, ast.Attribute) and node.attr == "value"
                    and is_state(node.value)))
    lines = []
    for node in ast.walk(tree):
        items = (node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set)
                 else node.keys if isinstance(node, ast.Dict) else [])
        if sum(is_state(i) for i in items) >= 2:
            lines.append(node.lineno)
    return lines


def test_no_module_spells_its_own_set_of_states():
    names = set(NAMES)
    found = {}
    for folder in ("client", "codec", "server"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == DEFINITION:
                continue
            tree = ast.parse(path.read_text(), str(path))
            lines = _state_sets(tree, names)
            lines += [c.lineno for c in ast.walk(tree)
                      if isinstance(c, ast.ClassDef) and c.name == "RunState"]
            if lines:
                found[str(path.relative_to(ROOT))] = lines
    assert found == {}
