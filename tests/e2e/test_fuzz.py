"""Hostile input through the real server: generated and mutated requests over a real
loopback channel to one `python -m server.main` subprocess.

Every answer must be a success or a documented refusal with its details
(INVALID_ARGUMENT + BadRequest violations naming fields, NOT_FOUND + ResourceInfo,
FAILED_PRECONDITION + PreconditionFailure, RESOURCE_EXHAUSTED + QuotaFailure,
ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED), never INTERNAL or UNKNOWN; the server
stays up and SERVING; and after each refusal the store's logical content (every row of
every table, read from the SQLite file by a read-only connection beside the server's) is
what it was before the call.

Specs start from the presets ListScenarios returns and from serverproc.spec(), and are
mutated field by field through the message descriptors: out-of-range and non-finite
numbers, unknown enum numbers, unknown map keys, long lists, strings with NUL, unicode or
100k characters, cleared required fields. Most CreateRun calls use validate_only; a few
create real runs (kept small) and cancel them. Requests also arrive as raw random or
corrupted bytes through a generic unary-unary call. Hypothesis is derandomized with no
example database, so every run sends the same requests. A request above gRPC's 4 MiB
message limit is refused by gRPC itself (RESOURCE_EXHAUSTED without details); for those only
the server's survival and the store are checked. The tests below the fuzz tests
replay the exact inputs that broke the server before it was fixed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import sqlite3
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor as F
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from serverproc import TERMINAL, R, Server, details, rss_mib, spec, wait_state

from compactsim.proto.v1 import run_pb2, simulator_pb2, simulator_pb2_grpc, spec_pb2, sweep_pb2

SETTINGS = dict(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TIMEOUT = 30
GRPC_MESSAGE_LIMIT = 4 << 20   # gRPC refuses a larger request itself, without details
# The server's resident memory after any call of the fuzz: it starts near 90 MiB, and a
# refused request must leave nothing behind (a kept 4 MiB spec would be about 0.8 GiB).
MAX_RSS_MIB = 400
MAX_GENERATED = 6 << 20        # no more mutations once a spec is this large
C = grpc.StatusCode
REFUSALS = {C.INVALID_ARGUMENT: error_details_pb2.BadRequest,
            C.NOT_FOUND: error_details_pb2.ResourceInfo,
            C.FAILED_PRECONDITION: error_details_pb2.PreconditionFailure,
            C.RESOURCE_EXHAUSTED: error_details_pb2.QuotaFailure,
            C.ALREADY_EXISTS: None, C.PERMISSION_DENIED: None, C.UNAUTHENTICATED: None}
METHODS = ("CreateRun", "GetRun", "ListRuns", "CancelRun", "DeleteRun", "ListRunSamples",
           "GetRunReport", "CreateSweep", "GetSweep", "ListScenarios")


# ---- the server, the store and the checks ---------------------------------------------------

@pytest.fixture(scope="module")
def srv(make_module_server):
    s = make_module_server()
    yield s
    stopped(s)


def stopped(s: Server) -> None:
    """Stop `s` (killed if SIGTERM does not end it in time); it must exit cleanly."""
    try:
        rc = s.stop()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
    assert rc == 0, log_tail(s)


@pytest.fixture(scope="module")
def bases(srv) -> list[spec_pb2.Spec]:
    """The valid specs the mutations start from."""
    scenarios = srv.stub.ListScenarios(simulator_pb2.ListScenariosRequest(), timeout=TIMEOUT)
    out = [sc.spec for sc in scenarios.scenarios if sc.spec.workload]
    assert len(out) >= 5
    return [spec(), spec(seed=9, duration=0.2, rate=50.0), *out]


def digest(db: Path) -> str:
    """SHA-256 of every row of every table, in a fixed order, read with a read-only
    connection (WAL mode lets it read beside the server's writer)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        h = hashlib.sha256()
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for t in tables:
            width = len(con.execute(f'SELECT * FROM "{t}" LIMIT 0').description)
            order = ", ".join(str(i) for i in range(1, width + 1))
            h.update(t.encode())
            for row in con.execute(f'SELECT * FROM "{t}" ORDER BY {order}'):
                h.update(repr(row).encode())
        return h.hexdigest()
    finally:
        con.close()


def log_tail(srv) -> str:
    return (srv.data_dir / "server.log").read_text(errors="replace")[-3000:]


def check_rss(srv) -> None:
    rss = rss_mib(srv.proc.pid)
    assert rss < MAX_RSS_MIB, f"server RSS {rss:.0f} MiB >= {MAX_RSS_MIB} MiB"


def check_refusal(srv, err: grpc.RpcError) -> None:
    """A documented code with its details; the server still up, its memory bounded."""
    assert srv.proc.poll() is None, log_tail(srv)
    check_rss(srv)
    code = err.code()
    assert code in REFUSALS, f"{code}: {err.details()}\n{log_tail(srv)}"
    assert err.details(), f"{code} without a message"
    kind = REFUSALS[code]
    if kind is None:
        return
    status = rpc_status.from_call(err)
    assert status is not None, f"{code} without google.rpc.Status details: {err.details()}"
    found = details(status, kind)
    assert found, f"{code} without {kind.DESCRIPTOR.name}: {status}"
    if kind is error_details_pb2.BadRequest:
        violations = [v for b in found for v in b.field_violations]
        assert violations and all(v.field and v.description for v in violations), status
    if kind is error_details_pb2.ResourceInfo:
        assert all(r.resource_type for r in found), status


def call(srv, fn, request, *, stream: bool = False):
    """`fn(request)`; a refusal is checked and must leave the store as it was. Returns
    the answer, or None after a refusal."""
    db = srv.data_dir / "compactsim.db"
    before = digest(db)
    size = len(request) if isinstance(request, bytes) else request.ByteSize()
    try:
        answer = list(fn(request, timeout=TIMEOUT)) if stream else fn(request, timeout=TIMEOUT)
    except grpc.RpcError as err:
        event(err.code().name)   # --hypothesis-show-statistics tells how often each came
        if size > GRPC_MESSAGE_LIMIT and err.code() == C.RESOURCE_EXHAUSTED:
            assert srv.proc.poll() is None, log_tail(srv)   # gRPC's own refusal: no details
        else:
            check_refusal(srv, err)
        assert digest(db) == before, f"the store changed on a refusal ({err.code()}: " \
                                     f"{err.details()})"
        return None
    event("OK")
    return answer


def serving(srv) -> bool:
    check_rss(srv)
    health = health_pb2_grpc.HealthStub(srv.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    return srv.proc.poll() is None and answer.status == health_pb2.HealthCheckResponse.SERVING


def raw_method(srv, method: str, stream: bool = False):
    make = srv.channel.unary_stream if stream else srv.channel.unary_unary
    return make(f"/compactsim.v1.Simulator/{method}", request_serializer=lambda b: b,
                response_deserializer=lambda b: b)


# ---- strategies -----------------------------------------------------------------------------

def _long(chars: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(st.text(chars, min_size=1, max_size=3),
                     st.sampled_from([64, 65, 1000, 20_000])).map(lambda t: t[0] * t[1])


CHARS = st.characters(codec="utf-8")
TEXT = (st.text(CHARS, max_size=30) | _long(CHARS)
        | st.sampled_from(["", "\x00", "v6.10", "v4.4", "3.x", "4.4+", "anon", "\u2603" * 70,
                           "mm_page_alloc", "runs/", "scenarios/churn", "../../etc/passwd"]))
DOUBLES = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, -1.0,
                                         1e308, -1e308, 5e-324, 1e9 + 1, 2.0**63, 0.5])
INT_RANGES = {F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_UINT64: (0, 2**64 - 1),
              F.TYPE_INT32: (-2**31, 2**31 - 1), F.TYPE_INT64: (-2**63, 2**63 - 1)}


def scalars(fd) -> st.SearchStrategy:
    if fd.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return DOUBLES
    if fd.type in INT_RANGES:
        lo, hi = INT_RANGES[fd.type]
        edges = [v for v in (0, 1, 8, 64, 257, 1001, 2**31, 2**32 - 1, 2**63, 2**64 - 1, -1,
                             -2**31, -2**63) if lo <= v <= hi]
        return st.integers(lo, hi) | st.sampled_from(edges)
    if fd.type == F.TYPE_ENUM:
        return (st.sampled_from([v.number for v in list(fd.enum_type.values)])
                | st.integers(-2**31, 2**31 - 1))
    if fd.type == F.TYPE_BOOL:
        return st.booleans()
    return TEXT


def _is_map(fd) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


@st.composite
def mutate(draw, msg, depth: int = 0) -> None:
    """One hostile change to `msg` (in place) at a field chosen through its descriptor."""
    fd = draw(st.sampled_from(list(msg.DESCRIPTOR.fields)))
    target = getattr(msg, fd.name)
    if _is_map(fd):                                         # order_mix, labels
        key, value = (fd.message_type.fields_by_name[n] for n in ("key", "value"))
        if draw(st.booleans()):
            target.clear()
        target.update(draw(st.dictionaries(scalars(key), scalars(value), max_size=12)))
    elif fd.message_type is not None and fd.is_repeated:   # workload
        action = draw(st.sampled_from(["descend", "descend", "clear", "grow", "empty"]))
        if action == "descend" and len(target):
            draw(mutate(target[draw(st.integers(0, len(target) - 1))], depth + 1))
        elif action == "clear":
            del target[:]
        elif action == "grow" and len(target):
            first = type(target[0])()
            first.CopyFrom(target[0])
            unique = draw(st.booleans())
            copies = draw(st.sampled_from([1, 5, 256, 300]))
            if first.ByteSize() > 10_000:   # long strings in it: few copies (request size)
                copies = min(copies, 5)
            for i in range(copies):
                item = target.add()
                item.CopyFrom(first)
                if unique and item.DESCRIPTOR.fields_by_name.get("name"):
                    item.name = f"{first.name}-{i}"
        else:
            target.add()
    elif fd.message_type is not None:
        if depth > 3 or draw(st.integers(0, 3)) == 0:
            msg.ClearField(fd.name)
        else:
            target.SetInParent()
            draw(mutate(target, depth + 1))
    elif fd.is_repeated:                      # compact_memory, names
        items, times = draw(st.tuples(st.lists(scalars(fd), max_size=4),
                                      st.sampled_from([1, 1, 20, 300])))
        if times > 1:   # a long list of short items: the request stays small
            items = [x[:100] if isinstance(x, str) else x for x in items]
        del target[:]
        target.extend(items * times)
    elif fd.has_presence and draw(st.integers(0, 4)) == 0:
        msg.ClearField(fd.name)
    else:
        setattr(msg, fd.name, draw(scalars(fd)))


@st.composite
def specs(draw, bases: list[spec_pb2.Spec], most: int = 4) -> spec_pb2.Spec:
    out = spec_pb2.Spec()
    out.CopyFrom(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(0, most))):
        if out.ByteSize() > MAX_GENERATED:
            break
        draw(mutate(out))
    return out


@st.composite
def runs(draw, bases: list[spec_pb2.Spec], most: int = 4) -> run_pb2.Run:
    run = R(spec=draw(specs(bases, most)))
    if draw(st.integers(0, 9)) == 0:
        run.ClearField("spec")
    if draw(st.integers(0, 4)) == 0:
        run.scenario = draw(st.sampled_from(["scenarios/churn", "scenarios/thpscale"]) | TEXT)
    if draw(st.integers(0, 3)) == 0:
        run.display_name = draw(TEXT)
    if draw(st.integers(0, 3)) == 0:
        run.labels.update(draw(st.dictionaries(TEXT, TEXT, max_size=4)))
    return run


def requests(draw, bases, validate_only: bool, most: int = 4
             ) -> simulator_pb2.CreateRunRequest:
    req = simulator_pb2.CreateRunRequest(run=draw(runs(bases, most)),
                                         validate_only=validate_only)
    if draw(st.integers(0, 4)) == 0:
        req.run_id = draw(TEXT | st.from_regex(r"[a-z][a-z0-9-]{3,20}", fullmatch=True))
    if draw(st.integers(0, 4)) == 0:
        req.request_id = draw(TEXT)
    return req


def small(run: run_pb2.Run) -> None:
    """Keep a spec that will really run cheap: one small node, a short duration, a few
    small groups (the mutated rest stays)."""
    s = run.spec
    s.machine.nodes, s.machine.memory_bytes, s.machine.dma32_bytes = 1, 64 << 20, 0
    s.machine.zram_bytes = 0
    s.duration_seconds = 0.2
    s.sampling.interval_seconds = 0.05
    del s.workload[3:]
    for g in s.workload:
        for field, most in (("tasks", 4), ("batch", 16), ("burst", 16), ("rate", 1000.0)):
            if g.HasField(field) and not getattr(g, field) <= most:   # NaN too
                setattr(g, field, most)


def names(kind: str) -> st.SearchStrategy:
    return (TEXT | TEXT.map(lambda t: f"{kind}/{t}")
            | st.from_regex(rf"{kind}/[a-z0-9-]{{1,70}}(/report)?", fullmatch=True))


def values() -> st.SearchStrategy:
    leaves = (DOUBLES.map(lambda x: struct_pb2.Value(number_value=x))
              | TEXT.map(lambda t: struct_pb2.Value(string_value=t))
              | st.booleans().map(lambda b: struct_pb2.Value(bool_value=b))
              | st.just(struct_pb2.Value(null_value=0)))

    def nest(children):
        def as_list(items):
            v = struct_pb2.Value()
            v.list_value.values.extend(items)
            return v

        def as_struct(items):
            v = struct_pb2.Value()
            for k, x in items.items():
                v.struct_value.fields[k].CopyFrom(x)
            return v
        return (st.lists(children, max_size=3).map(as_list)
                | st.dictionaries(TEXT, children, max_size=3).map(as_struct))
    return st.recursive(leaves, nest, max_leaves=6)


PATHS = st.sampled_from(["workload[0].rate", "tunables.compaction_proactiveness",
                         "machine.memory", "kernel.profile", "workload[0].order_mix",
                         "workload[7].rate", "workload[0]", "seed", "duration", "costs",
                         "sampling.trace_events", "machine.memory=1", "a..b", "nope.x",
                         "workload[99999999999999999999].rate"]) | TEXT

_CHARS = 'abcdefghijklmnopqrstuvwxyz_.:*"\\()-=!<> \t0123456789AZ\x00\u00e9\u2603'
FILTER_WORDS = ['state', 'creator', 'display_name', 'scenario', 'sweep', 'create_time',
                'labels', 'labels.k', '.', ':', '*', '=', '!=', '<', '>=', 'AND', 'OR', 'NOT',
                'and', '-', '(', ')', '"', '"RUNNING"', 'QUEUED', '"zram-*"', '"a\\*b"',
                '"2024-05-01T12:00:00Z"', '"9999-12-31T23:59:59Z"', '"0000-01-01T00:00:00Z"',
                '"2024-02-30T00:00:00Z"', '"sweeps/*"', '"\\q"', '"unterminated']
RESTRICTIONS = (
    st.tuples(st.sampled_from(["state", "creator", "display_name", "scenario", "sweep",
                               "labels.k", 'labels."\u2603"']),
              st.sampled_from(["=", "!="]),
              st.sampled_from(['"QUEUED"', "CANCELLED", '"anonymous"', '"x*"', '"sweeps/*"',
                               '"scenarios/churn"', '"\u00e9\\*"'])).map(" ".join)
    | st.tuples(st.sampled_from(["<", "<=", ">", ">=", "=", "!="]),
                st.sampled_from(['"2024-05-01T12:00:00Z"', '"2262-04-11T23:47:16Z"',
                                 '"1970-01-01T00:00:00.5+02:00"'])).map(
        lambda t: f"create_time {t[0]} {t[1]}")
    | st.just("labels.k:*"))
GRAMMATICAL = st.recursive(
    RESTRICTIONS, lambda inner: st.tuples(inner, st.sampled_from([" AND ", " OR "]), inner)
    .map("".join) | inner.map(lambda f: f"NOT ({f})") | inner.map(lambda f: f"-({f})"),
    max_leaves=6)
FILTERS = (GRAMMATICAL | st.lists(st.sampled_from(FILTER_WORDS), max_size=12).map(" ".join)
           | st.text(st.sampled_from(_CHARS), max_size=60)
           | st.tuples(st.sampled_from(["(", "NOT ", "-"]), st.integers(1, 3000)).map(
               lambda t: t[0] * t[1] + 'state = "QUEUED"' + (")" * t[1] if t[0] == "(" else ""))
           | st.integers(1, 3000).map(lambda n: " AND ".join(['display_name = "x"'] * n))
           | TEXT)
ORDER_BYS = (st.lists(st.sampled_from(["create_time", "display_name", "state", "desc", "asc",
                                       ",", " ", "DESC", "x", "create_time desc extra"]),
                      max_size=6).map(" ".join) | TEXT)


def forged_tokens(real: str) -> st.SearchStrategy:
    """Tokens shaped like `real` (base64 of JSON with its query hash) with other keys."""
    body = json.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))
    keys = st.lists(st.integers(-2**70, 2**70) | st.text(CHARS, max_size=8) | st.none()
                    | st.booleans() | st.floats() | st.just("\ud800"), max_size=3)

    def encode(k):
        raw = json.dumps({**body, "k": k}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return keys.map(encode)


# ---- the fuzz tests ---------------------------------------------------------------------------

@given(data=st.data())
@settings(max_examples=150, **SETTINGS)
def test_fuzz_create_run_validate_only(srv, bases, data):
    req = requests(data.draw, bases, validate_only=True)
    run = call(srv, srv.stub.CreateRun, req)
    if run is not None:   # accepted: what came back is the effective spec of a valid one
        assert run.state == R.QUEUED and run.effective_spec.workload


@given(data=st.data())
@settings(max_examples=20, **SETTINGS)
def test_fuzz_create_run_for_real_then_cancel(srv, bases, data):
    req = requests(data.draw, bases, validate_only=False, most=2)
    req.run.ClearField("scenario")
    small(req.run)
    run = call(srv, srv.stub.CreateRun, req)
    if run is None:
        return
    try:
        srv.stub.CancelRun(simulator_pb2.CancelRunRequest(name=run.name), timeout=TIMEOUT)
    except grpc.RpcError as err:   # it finished first
        assert err.code() == C.FAILED_PRECONDITION, err.details()
    assert wait_state(srv.stub, run.name, TERMINAL, timeout=60).state in TERMINAL


@given(method=st.sampled_from(METHODS),
       payload=st.binary(max_size=300) | st.tuples(st.binary(min_size=1, max_size=8),
                                                   st.integers(0, 200)).map(
           lambda t: _corrupt(t[0], t[1])))
@settings(max_examples=60, **SETTINGS)
def test_fuzz_raw_bytes(srv, method, payload):
    answer = call(srv, raw_method(srv, method), payload)
    assert answer is None or isinstance(answer, bytes)


def _corrupt(noise: bytes, at: int) -> bytes:
    """A valid CreateRunRequest with `noise` written over it at `at`."""
    valid = bytearray(simulator_pb2.CreateRunRequest(
        run=R(spec=spec(), display_name="d", labels={"k": "v"}),
        validate_only=True).SerializeToString())
    at %= len(valid)
    valid[at:at + len(noise)] = noise
    return bytes(valid)


@given(data=st.data())
@settings(max_examples=70, **SETTINGS)
def test_fuzz_list_runs(srv, data):
    first = srv.stub.ListRuns(simulator_pb2.ListRunsRequest(page_size=1), timeout=TIMEOUT)
    tokens = TEXT | st.binary(max_size=40).map(
        lambda b: base64.urlsafe_b64encode(b).decode())
    if first.next_page_token:
        tokens = tokens | forged_tokens(first.next_page_token)
    req = simulator_pb2.ListRunsRequest(
        filter=data.draw(FILTERS), order_by=data.draw(ORDER_BYS),
        page_size=data.draw(st.integers(-2**31, 2**31 - 1) | st.integers(0, 3)),
        page_token=data.draw(st.just("") | tokens), show_deleted=data.draw(st.booleans()))
    answer = call(srv, srv.stub.ListRuns, req)
    if answer is not None:
        assert len(answer.runs) <= max(req.page_size, 0) or req.page_size == 0


@given(data=st.data())
@settings(max_examples=60, **SETTINGS)
def test_fuzz_names(srv, data):
    existing = [r.name for r in srv.stub.ListRuns(simulator_pb2.ListRunsRequest(
        page_size=5), timeout=TIMEOUT).runs]
    name = data.draw(names("runs") | (st.sampled_from(existing) if existing else names("runs")))
    which = data.draw(st.sampled_from(["get", "cancel", "delete", "watch", "samples",
                                       "report", "sweep", "scenarios"]))
    s = srv.stub
    if which == "get":
        call(srv, s.GetRun, simulator_pb2.GetRunRequest(name=name))
    elif which == "cancel":
        call(srv, s.CancelRun, simulator_pb2.CancelRunRequest(name=name))
    elif which == "delete":
        call(srv, s.DeleteRun, simulator_pb2.DeleteRunRequest(
            name=name, force=data.draw(st.booleans())))
    elif which == "watch":
        req = simulator_pb2.WatchRunRequest(name=name)
        if data.draw(st.booleans()):
            req.after_sequence = data.draw(st.integers(-2**63, 2**63 - 1))
        if data.draw(st.booleans()):
            req.heartbeat_interval_seconds = data.draw(DOUBLES)
        if data.draw(st.booleans()):   # a real run, so the stream gets past the lookup
            req.name = existing[0] if existing else name
        call(srv, s.WatchRun, req, stream=True)
    elif which == "samples":
        columns, times = data.draw(st.tuples(st.lists(TEXT, max_size=3),
                                             st.sampled_from([1, 1, 1000, 100_000])))
        if times > 1:   # many short names, not many long ones (the request stays small)
            columns = [c[:20] for c in columns]
        call(srv, s.ListRunSamples, simulator_pb2.ListRunSamplesRequest(
            parent=name, page_size=data.draw(st.integers(-2**31, 2**31 - 1) | st.just(0)),
            max_points=data.draw(st.integers(-2**31, 2**31 - 1) | st.just(0)),
            page_token=data.draw(st.just("") | TEXT), columns=columns * times))
    elif which == "scenarios":
        call(srv, s.ListScenarios, simulator_pb2.ListScenariosRequest(
            page_size=data.draw(st.integers(-2**31, 2**31 - 1) | st.integers(0, 3)),
            page_token=data.draw(TEXT | st.from_regex(r"[0-9\u00b2\u0663]{1,12}",
                                                      fullmatch=True))))
    elif which == "report":
        call(srv, s.GetRunReport, simulator_pb2.GetRunReportRequest(
            name=data.draw(names("runs").map(lambda n: n if n.endswith("/report")
                                             else n + "/report") | TEXT),
            view=data.draw(st.integers(-2**31, 2**31 - 1))))
    else:
        call(srv, s.GetSweep, simulator_pb2.GetSweepRequest(name=data.draw(names("sweeps"))))


PLAUSIBLE = st.sampled_from([("workload[0].rate", st.floats(1.0, 1e4)),
                             ("tunables.compaction_proactiveness", st.integers(0, 100)),
                             ("tunables.extfrag_threshold", st.integers(0, 1000)),
                             ("kernel.profile", st.sampled_from(["v4.4", "v5.9", "v6.17"]))])


@given(data=st.data())
@settings(max_examples=50, **SETTINGS)
def test_fuzz_sweeps(srv, bases, data):
    plausible = data.draw(st.booleans())   # a grid the server may well accept, or junk
    sweep = sweep_pb2.Sweep(display_name=data.draw(TEXT), seeds=data.draw(
        st.integers(0, 3) if plausible else st.integers(-2**31, 2**31 - 1)))
    if plausible or data.draw(st.integers(0, 3)):
        sweep.base_spec.CopyFrom(data.draw(specs(bases, 0 if plausible else 3)))
    if not plausible and data.draw(st.integers(0, 3)) == 0:
        sweep.scenario = data.draw(st.sampled_from(["scenarios/churn"]) | TEXT)
    for _ in range(data.draw(st.integers(1 if plausible else 0, 3))):
        if plausible:
            path, axis = data.draw(PLAUSIBLE)
            sweep.parameters.add(path=path, values=[
                struct_pb2.Value(**{"string_value" if isinstance(x, str) else "number_value": x})
                for x in data.draw(st.lists(axis, min_size=1, max_size=3))])
        else:
            sweep.parameters.add(path=data.draw(PATHS),
                                 values=data.draw(st.lists(values(), max_size=4)))
    if not plausible:
        sweep.metrics.extend(data.draw(st.lists(TEXT, max_size=2)))
    req = simulator_pb2.CreateSweepRequest(sweep=sweep, validate_only=True)
    if not plausible:
        req.sweep_id = data.draw(st.just("") | TEXT)
    call(srv, srv.stub.CreateSweep, req)


@pytest.fixture(scope="module")
def locked(tmp_path_factory, make_module_server):
    """A second server, with a token file."""
    data = tmp_path_factory.mktemp("fuzz-auth")
    tokens = data / "tokens"
    tokens.write_text("fuzz-secret-token-1 alice\n")
    tokens.chmod(0o600)
    s = make_module_server("--token-file", str(tokens), data_dir=data,
                           token="fuzz-secret-token-1")
    yield s
    stopped(s)


@given(header=st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e),
                                  max_size=80)
       | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=80).map(
           lambda t: f"Bearer {t}") | st.just("Bearer fuzz-secret-token-1"),
       method=st.sampled_from(["GetRun", "ListRuns", "CreateRun", "DeleteRun"]))
@settings(max_examples=30, **SETTINGS)
def test_fuzz_bearer_tokens(locked, header, method):
    stub = simulator_pb2_grpc.SimulatorStub(locked.channel_for(None))
    request = {"GetRun": simulator_pb2.GetRunRequest(name="runs/abcd"),
               "ListRuns": simulator_pb2.ListRunsRequest(),
               "CreateRun": simulator_pb2.CreateRunRequest(run=R(spec=spec()),
                                                           validate_only=True),
               "DeleteRun": simulator_pb2.DeleteRunRequest(name="runs/abcd")}[method]
    metadata = [("authorization", header)] if header is not None else []
    answer = call(locked, functools.partial(getattr(stub, method), metadata=metadata), request)
    if header != "Bearer fuzz-secret-token-1":
        assert answer is None   # refused (UNAUTHENTICATED: checked by call)


def test_server_is_serving_after_the_fuzz(srv, locked):
    assert serving(srv), log_tail(srv)
    assert serving(locked), log_tail(locked)


# ---- the exact inputs that broke it -----------------------------------------------------------

def refused(srv, fn, request, code=C.INVALID_ARGUMENT, *, stream=False) -> grpc.RpcError:
    """The call is refused with `code` (and passes the checks of `call`)."""
    db = srv.data_dir / "compactsim.db"
    before = digest(db)
    with pytest.raises(grpc.RpcError) as exc:
        answer = fn(request, timeout=TIMEOUT)
        if stream:
            list(answer)
    check_refusal(srv, exc.value)
    assert exc.value.code() == code, exc.value.details()
    assert digest(db) == before
    return exc.value


def violations(err: grpc.RpcError) -> dict[str, str]:
    out = {}
    for d in rpc_status.from_call(err).details:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            msg = error_details_pb2.BadRequest()
            d.Unpack(msg)
            out.update({v.field: v.description for v in msg.field_violations})
    return out


def test_the_digest_sees_what_the_server_writes(srv):
    """The instrument the fuzz relies on: a write the server commits changes the digest."""
    db = srv.data_dir / "compactsim.db"
    before = digest(db)
    assert digest(db) == before
    run = srv.stub.CreateRun(simulator_pb2.CreateRunRequest(run=R(spec=spec())),
                             timeout=TIMEOUT)
    wait_state(srv.stub, run.name, TERMINAL, timeout=60)
    finished = digest(db)
    assert finished != before
    srv.stub.DeleteRun(simulator_pb2.DeleteRunRequest(name=run.name), timeout=TIMEOUT)
    assert digest(db) != finished


def test_undecodable_request_bytes_are_invalid_argument(srv):
    err = refused(srv, raw_method(srv, "CreateRun"), b"\xff\xff\xff\x01garbage")
    assert "not a valid compactsim.v1.CreateRunRequest" in violations(err)["request"]
    bad_utf8 = b"\x1a\x02\xff\xfe"        # ListRunsRequest.filter = b"\xff\xfe"
    refused(srv, raw_method(srv, "ListRuns"), bad_utf8)
    refused(srv, raw_method(srv, "WatchRun", stream=True), b"\x0a\x03\xff\xfe\xfd", stream=True)
    assert serving(srv)


@pytest.mark.parametrize("text,column,words", [
    ("(" * 5000 + 'state = "QUEUED"' + ")" * 5000, 33, "nested too deeply"),
    ("NOT " * 3000 + 'state = "QUEUED"', 129, "nested too deeply"),
    (" AND ".join(['display_name = "x"'] * 2000), 2301, "too many comparisons"),
    ('create_time > "9999-12-31T23:59:59Z"', 15, "out of range"),
])
def test_filters_that_crashed_the_server(srv, text, column, words):
    err = refused(srv, srv.stub.ListRuns, simulator_pb2.ListRunsRequest(filter=text))
    assert f"column {column}" in violations(err)["filter"] and words in err.details()


def test_page_token_with_keys_sqlite_cannot_bind(srv):
    for _ in range(2):
        run = srv.stub.CreateRun(simulator_pb2.CreateRunRequest(run=R(spec=spec())),
                                 timeout=TIMEOUT)
        wait_state(srv.stub, run.name, TERMINAL, timeout=60)   # the store is quiet again
    token = srv.stub.ListRuns(simulator_pb2.ListRunsRequest(page_size=1),
                              timeout=TIMEOUT).next_page_token
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for keys in ([2**70, "x"], ["\ud800", "x"]):
        forged = base64.urlsafe_b64encode(json.dumps({**body, "k": keys}).encode()).decode()
        err = refused(srv, srv.stub.ListRuns,
                      simulator_pb2.ListRunsRequest(page_size=1, page_token=forged))
        assert "page_token" in violations(err)


def test_scenario_page_tokens_int_cannot_read(srv):
    for token in ("\u00b2", "9" * 5000, "\u0663"):    # isdigit(), yet not for int()
        err = refused(srv, srv.stub.ListScenarios,
                      simulator_pb2.ListScenariosRequest(page_token=token))
        assert "page_token" in violations(err)
    second = srv.stub.ListScenarios(simulator_pb2.ListScenariosRequest(page_size=2))
    rest = srv.stub.ListScenarios(simulator_pb2.ListScenariosRequest(
        page_size=2, page_token=second.next_page_token))
    assert second.next_page_token == "2" and rest.scenarios[0].name > second.scenarios[1].name


def test_many_unknown_sample_columns_answer_at_once(srv):
    run = srv.stub.CreateRun(simulator_pb2.CreateRunRequest(run=R(spec=spec())),
                             timeout=TIMEOUT)
    assert wait_state(srv.stub, run.name, TERMINAL, timeout=60).state == R.SUCCEEDED
    started = time.monotonic()
    err = refused(srv, srv.stub.ListRunSamples, simulator_pb2.ListRunSamplesRequest(
        parent=run.name, columns=["nope"] * 100_000))   # each looked up by index: quadratic
    assert time.monotonic() - started < 10
    assert violations(err)["columns[0]"] == "unknown column 'nope'"


def test_sweep_values_without_json_form(srv):
    for x in (math.nan, math.inf):
        sweep = sweep_pb2.Sweep(base_spec=spec(), parameters=[sweep_pb2.SweepParameter(
            path="workload[0].name", values=[struct_pb2.Value(number_value=1.0),
                                             struct_pb2.Value(number_value=x)])])
        err = refused(srv, srv.stub.CreateSweep, simulator_pb2.CreateSweepRequest(sweep=sweep))
        assert violations(err) == {"sweep.parameters[0].values[1]":
                                   "must not hold NaN or an infinity"}


def test_sweep_paths_that_are_not_field_paths(srv):
    for path, reason in (("machine.memory=1", "not a field path"),
                         ("workload[99999999999999999999].rate", "out of range")):
        sweep = sweep_pb2.Sweep(base_spec=spec(), parameters=[sweep_pb2.SweepParameter(
            path=path, values=[struct_pb2.Value(number_value=1.0)])])
        err = refused(srv, srv.stub.CreateSweep, simulator_pb2.CreateSweepRequest(
            sweep=sweep, validate_only=True))
        assert reason in violations(err)["sweep.parameters[0].path"]


def test_huge_echoes_still_reach_the_client_with_details(srv):
    s = spec()
    s.kernel.profile = "\x00" * 100_000            # echoed back in the reason
    err = refused(srv, srv.stub.CreateRun, simulator_pb2.CreateRunRequest(
        run=R(spec=s), validate_only=True))
    assert len(violations(err)["run.spec.kernel.profile"]) <= 200
    s = spec()
    for i in range(255):                           # one violation per bad group
        s.workload.add(name=f"g{i}", rate=-1.0)
    err = refused(srv, srv.stub.CreateRun, simulator_pb2.CreateRunRequest(
        run=R(spec=s), validate_only=True))
    shown = violations(err)
    assert "spec.workload[1].rate" in " ".join(shown) and len(shown) < 255
    assert "more not shown" in err.details()


def test_spec_size_limits_name_their_field(srv):
    cases = {}
    s = spec()
    s.workload[0].name = ""
    cases["run.spec.workload[0].name"] = s
    s = spec()
    for i in range(300):
        s.workload.add(name=f"g{i}")
    cases["run.spec.workload"] = s
    s = spec()
    s.compact_memory_seconds.extend([0.1] * 1001)
    cases["run.spec.compact_memory_seconds"] = s
    s = spec()
    s.workload[0].order_mix.update({i: 1.7e308 for i in range(11)})
    cases["run.spec.workload[0].order_mix"] = s
    for field, s in cases.items():
        err = refused(srv, srv.stub.CreateRun, simulator_pb2.CreateRunRequest(
            run=R(spec=s), validate_only=True))
        assert list(violations(err)) == [field], violations(err)


def test_undecodable_bytes_without_a_token_are_unauthenticated_first(locked):
    channel = locked.channel_for(None)
    garbage = channel.unary_unary("/compactsim.v1.Simulator/CreateRun",
                                  request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
    refused(locked, garbage, b"\xff\xff\xff\x01garbage", C.UNAUTHENTICATED)
    with_token = locked.channel_for("fuzz-secret-token-1").unary_unary(
        "/compactsim.v1.Simulator/CreateRun", request_serializer=lambda b: b,
        response_deserializer=lambda b: b)
    err = refused(locked, with_token, b"\xff\xff\xff\x01garbage")
    assert "request" in violations(err)
