"""The store reads in one sitting a concern at a time: a package of small modules over one
SQLite connection, not one class of some 45 methods."""

import ast
import sqlite3
import time
from pathlib import Path

from compactsim.server.store import RunStore

STORE = Path(__file__).resolve().parents[2] / "server" / "store"
MAX_LINES = 350
MAX_METHODS = 12


def modules() -> list[Path]:
    assert STORE.is_dir(), "server/store is a package of modules by concern"
    return sorted(STORE.glob("*.py"))


def test_each_store_module_is_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in modules()}
    assert len(sizes) >= 8, sizes
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_no_store_class_gathers_every_concern():
    big = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                methods = [f for f in node.body if isinstance(f, ast.FunctionDef)]
                if len(methods) > MAX_METHODS:
                    big[f"{path.name}:{node.name}"] = len(methods)
    assert big == {}


def test_only_the_database_module_opens_connections():
    opening = [p.name for p in modules() if "sqlite3.connect(" in p.read_text()]
    assert opening == ["database.py"]


def test_every_part_writes_through_one_connection(tmp_path, monkeypatch):
    writers = set()   # the connections that ran a statement that writes
    connect = sqlite3.connect

    def watched(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn_id = id(conn)

        def trace(sql):
            if sql.split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE", "REPLACE"):
                writers.add(conn_id)

        conn.set_trace_callback(trace)
        return conn

    monkeypatch.setattr(sqlite3, "connect", watched)
    with RunStore(tmp_path / "s.db") as s:
        with s.transaction():   # reads inside a transaction use the writing connection
            rid = s.create_run({})[0].id
            s.update_state(rid, "RUNNING")
            s.add_samples(rid, [{"time_s": 0.0}])
            s.put_report(rid, "trace", "")
            s.append_event(rid, "log", {})
            s.create_sweep({}, {})
            assert s.events_after(rid)[-1].type == "log"
            assert s.list_samples(rid)[0][0].sim_time_s == 0.0
        s.put_report_part(rid, "trace", 0, "a")
        assert s.get_report(rid, "trace") == "a"
        time.sleep(0.5)   # a checkpoint ran meanwhile, on the checkpointer's connection
        assert writers == {id(s.db._conn)}   # every part wrote through the one connection
