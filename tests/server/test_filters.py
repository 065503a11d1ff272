"""The ListRuns filter grammar and order_by: trees, errors with columns, SQL against a
Python reference on a real store."""

import calendar
import operator
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compactsim.codec.runstate import RunState
from compactsim.server.filters import (
    And,
    Compare,
    FilterError,
    HasLabel,
    Not,
    Or,
    OrderByError,
    OrderField,
    compile_filter,
    parse_filter,
    parse_order_by,
    parse_rfc3339_ns,
    render,
)
from compactsim.server.store import RunStore

T0 = 1_714_564_800_000_000_000   # 2024-05-01T12:00:00Z
S = 1_000_000_000


# -- trees ----------------------------------------------------------------------------------

def test_empty_filter_matches_everything():
    assert parse_filter("") is None and parse_filter("   ") is None
    c = compile_filter("  ")
    assert (c.sql, c.params, c.canonical) == ("1", (), "")


def test_or_binds_tighter_than_and_as_in_aip_160():
    a, b, c = (Compare("creator", "=", x) for x in "abc")
    assert parse_filter('creator = "a" AND creator = "b" OR creator = "c"') == And((a, Or((b, c))))
    assert parse_filter('creator = "a" OR creator = "b" AND creator = "c"') == And((Or((a, b)), c))
    assert parse_filter('(creator = "a" AND creator = "b") OR creator = "c"') == \
        Or((And((a, b)), c))


def test_negation_and_values():
    assert parse_filter('NOT state = RUNNING') == Not(Compare("state", "=", "RUNNING"))
    assert parse_filter('-labels.k:*') == Not(HasLabel("k"))
    assert parse_filter('NOT NOT labels."a b":*') == Not(Not(HasLabel("a b")))
    assert parse_filter('display_name = "zram-*"') == \
        Compare("display_name", "=", "zram-", prefix=True)
    assert parse_filter(r'display_name = "zram-\*"') == Compare("display_name", "=", "zram-*")
    assert parse_filter(r'labels.point = "a\"b\\c"') == \
        Compare("labels", "=", 'a"b\\c', key="point")
    assert parse_filter("labels.seed = 3") == Compare("labels", "=", "3", key="seed")
    assert parse_filter('create_time<="2024-05-01T12:00:00Z"') == \
        Compare("create_time", "<=", T0)


def test_keywords_are_upper_case_and_quoted_words_are_values():
    assert parse_filter('creator = "AND"') == Compare("creator", "=", "AND")
    with pytest.raises(FilterError, match="upper case: OR"):
        parse_filter('creator = a or creator = b')


def test_compiled_sql_holds_no_values():
    text = ('display_name = "x\' OR 1=1; --" AND labels."k\'; DROP" = "v" AND '
            'scenario = "zz9*" AND create_time > "2024-05-01T12:00:00Z"')
    c = compile_filter(text)
    for value in ("OR 1=1", "DROP", "x'", "zz9", "2024"):
        assert value not in c.sql
    assert c.params == ("x' OR 1=1; --", "k'; DROP", "v", 3, "zz9", T0)
    assert c.sql.count("?") == len(c.params)


def test_canonical_form_ignores_spelling():
    a = compile_filter('state=RUNNING AND (creator = "a")')
    b = compile_filter('  (state = "RUNNING")   AND creator="a"')
    assert a.canonical == b.canonical and a.params == b.params
    assert compile_filter(a.canonical) == a
    assert compile_filter('state = "RUNNING"').canonical != \
        compile_filter('state != "RUNNING"').canonical


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, column, message", [
    ("stat = RUNNING", 1, "unknown field 'stat': expected one of create_time, creator"),
    ("state = ", 9, "expected a value"),
    ('state = "RUNNNG"', 9, "unknown state"),
    ("state = running", 9, "expected one of QUEUED, RUNNING"),
    ('state = "RUN*"', 9, "unknown state"),
    ("state < RUNNING", 7, "state supports only = and !="),
    ('creator >= "a"', 9, "creator supports only = and !="),
    ("state RUNNING", 7, "expected a comparator (= != < <= > >=) after state"),
    ('state = RUNNING creator = "x"', 17, "expected AND, OR or the end of the filter, found "
                                          "'creator'"),
    ("state = RUNNING and creator = x", 17, "operators are upper case: AND"),
    ("state = RUNNING AND", 20, "expected a comparison"),
    ("AND state = RUNNING", 1, "expected a comparison"),
    ("(state = RUNNING", 17, "to close the '(' at column 1"),
    ('(state = RUNNING creator = "x")', 18, "expected AND, OR or ')'"),
    ("state = RUNNING)", 16, "expected AND, OR or the end"),
    ("()", 2, "expected a comparison"),
    ('display_name = "abc', 16, "unterminated string"),
    (r'display_name = "a\nb"', 18, "unknown escape"),
    ('display_name = "a*b"', 16, "'*' is only allowed at the end"),
    ('display_name = "**"', 16, "'*' is only allowed at the end"),
    ("state @ RUNNING", 7, "unexpected character '@'"),
    ("state ! RUNNING", 7, "expected '!='"),
    ('labels = "x"', 8, "expected '.' and a label key"),
    ('labels. = "x"', 9, "expected a label key"),
    ('labels."" = "x"', 8, "cannot be empty"),
    ('labels.k:"x"', 10, "expected '*' after ':'"),
    ('labels.k < "x"', 10, "labels supports only = and !="),
    ('creator:*', 8, "':' is only for labels.KEY:*"),
    ('creator.x = "a"', 8, "'creator' has no subfields"),
    ("create_time > 5", 15, "RFC 3339 timestamp in double quotes"),
    ('create_time > "2024-05-01"', 15, "bad timestamp '2024-05-01'"),
    ('create_time > "2024-02-30T00:00:00Z"', 15, "day 30 is out of range for 2024-02"),
    ('create_time > "2024-05-01T24:00:00Z"', 15, "time of day is out of range"),
    ('create_time > "2024-05-01T12:00:00+25:00"', 15, "UTC offset is out of range"),
    ('create_time > "2024-05-01T12:00:00.1234567891Z"', 15, "bad timestamp"),
    ('state = RUNNING AND create_time > "2024-13-01T00:00:00Z"', 35, "month 13"),
    ("(" * 33 + "state = RUNNING" + ")" * 33, 33, "nested too deeply: at most 32 levels"),
    ("NOT " * 40 + "state = RUNNING", 129, "nested too deeply"),
    ("-" * 40 + "state = RUNNING", 33, "nested too deeply"),
    (" OR ".join(["state = RUNNING"] * 101), 1901, "too many comparisons: at most 100"),
    ('create_time > "2262-04-11T23:47:17Z"', 15, "out of range: timestamps run from"),
    ('create_time < "1677-09-21T00:12:43Z"', 15, "out of range"),
    ('create_time < "9999-12-31T23:59:59Z"', 15, "out of range"),
    ("x" * 5000 + " = RUNNING", 1, "unknown field 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'..."),
])
def test_errors_name_the_column_and_what_was_expected(text, column, message):
    with pytest.raises(FilterError) as e:
        compile_filter(text)
    assert e.value.column == column, str(e.value)
    assert message in e.value.message
    assert str(e.value).startswith(f"filter: column {column}: ")
    caret = e.value.pretty().splitlines()[-1]
    assert caret.index("^") - 2 == column - 1          # the caret sits under the column
    assert isinstance(e.value, ValueError)


def test_limits_are_inclusive():
    deep = compile_filter("(" * 32 + "state = RUNNING" + ")" * 32)
    assert deep.params == ("RUNNING",)
    assert compile_filter("NOT " * 32 + "state = RUNNING").sql.count("NOT") == 32
    many = compile_filter(" OR ".join(f'creator = "u{i}"' for i in range(100)))
    assert len(many.params) == 100
    edge = compile_filter('create_time <= "2262-04-11T23:47:16.854775807Z" AND '
                          'create_time >= "1677-09-21T00:12:43.145224192Z"')
    assert edge.params == (2**63 - 1, -2**63)


@pytest.mark.parametrize("text, ns", [
    ("2024-05-01T12:00:00Z", T0),
    ("2024-05-01t12:00:00z", T0),
    ("2024-05-01T14:30:00+02:30", T0),
    ("2024-05-01T07:00:00-05:00", T0),
    ("2024-05-01T12:00:00.5Z", T0 + 500_000_000),
    ("2024-05-01T12:00:00.000000001Z", T0 + 1),
    ("1969-12-31T23:59:59.999999999Z", -1),
    ("2024-02-29T00:00:00Z", calendar.timegm((2024, 2, 29, 0, 0, 0)) * 10**9),
])
def test_rfc3339(text, ns):
    assert parse_rfc3339_ns(text) == ns


@pytest.mark.parametrize("text", ["2023-02-29T00:00:00Z", "2024-05-01T12:00:00",
                                  "2024-05-01 12:00:00Z", "2024-5-01T12:00:00Z",
                                  "2024-05-01T12:00:60Z", "2024-05-01T12:00:00+0200"])
def test_rfc3339_refuses(text):
    with pytest.raises(ValueError):
        parse_rfc3339_ns(text)


# -- order_by -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, fields", [
    ("", ()),
    ("create_time", (OrderField("create_time"),)),
    ("create_time desc", (OrderField("create_time", True),)),
    ("  state DESC ,display_name asc", (OrderField("state", True), OrderField("display_name"))),
    ("display_name,state desc,create_time",
     (OrderField("display_name"), OrderField("state", True), OrderField("create_time"))),
])
def test_order_by(text, fields):
    assert parse_order_by(text) == fields


@pytest.mark.parametrize("text, column, message", [
    ("size", 1, "unknown field 'size': expected one of create_time, end_time, display_name, "
                "state"),
    ("create_time, name", 14, "unknown field 'name'"),
    ("state, state desc", 8, "state appears more than once"),
    ("state upward", 7, "expected 'asc', 'desc' or ','"),
    ("state desc please", 12, "expected ',' or the end of order_by"),
    ("state,", 7, "expected a field name"),
    (", state", 1, "expected a field name"),
])
def test_order_by_errors(text, column, message):
    with pytest.raises(OrderByError) as e:
        parse_order_by(text)
    assert e.value.column == column and message in e.value.message
    assert str(e.value).startswith(f"order_by: column {column}: ")


# -- the property: SQL over a real store equals a Python reference --------------------------

STATES = [s.value for s in RunState]
SCENARIOS = ["", "thp", "thpscale", "zram-movable-ops"]
CREATORS = ["al", "alice", "bob"]
KEYS = ["design", "seed", "odd key"]
TEXT = st.text(alphabet='ab-"*\\ é', max_size=4)
# create times: a few seconds apart, often equal, sometimes with sub-second parts
TIMES = st.sampled_from([0, 0, 1, 2, 2, 3]).map(lambda s: T0 + s * 10**9) | \
    st.integers(T0 - 10**9, T0 + 4 * 10**9)


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*") + '"'


@st.composite
def rfc3339(draw, ns):
    """`ns` written as RFC 3339 in a random zone, with or without a fraction."""
    offset_min = draw(st.sampled_from([0, 0, 60, -300, 330, 14 * 60 - 1]))
    seconds, frac = divmod(ns, 10**9)
    y, mo, d, h, mi, se = time.gmtime(seconds + offset_min * 60)[:6]
    out = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{se:02d}"
    if frac or draw(st.booleans()):
        digits = f"{frac:09d}".rstrip("0") or "0"
        out += "." + draw(st.sampled_from([digits, f"{frac:09d}"]))
    if offset_min == 0:
        out += draw(st.sampled_from(["Z", "z", "+00:00"]))
    else:
        sign = "+" if offset_min > 0 else "-"
        out += f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    return quote(out)


@st.composite
def leaf(draw):
    kind = draw(st.sampled_from(["state", "str", "label", "has", "time"]))
    if kind == "state":
        op, v = draw(st.sampled_from(["=", "!="])), draw(st.sampled_from(STATES))
        return ("state", op, v), f"state {op} {draw(st.sampled_from([v, quote(v)]))}"
    if kind == "time":
        op, ns = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="])), draw(TIMES)
        return ("time", op, ns), f"create_time {op} {draw(rfc3339(ns))}"
    if kind == "has":
        key = draw(st.sampled_from(KEYS))
        return ("has", key), f"labels.{quote(key)}:*"
    op, prefix = draw(st.sampled_from(["=", "!="])), draw(st.booleans())
    if kind == "str":
        name = draw(st.sampled_from(["scenario", "creator", "display_name", "sweep"]))
        pool = {"scenario": SCENARIOS, "creator": CREATORS,
                "sweep": ["", "sw1", "s", "sweeps/sw1", "sweeps/", "sweeps/s", "sweeps"]}
        value = draw(st.sampled_from(pool[name]) if name in pool else TEXT)
        node = ("str", name, op, value, prefix)
        field = name
    else:
        key = draw(st.sampled_from(KEYS))
        value = draw(TEXT)
        node = ("label", key, op, value, prefix)
        field = f"labels.{key}" if " " not in key else f"labels.{quote(key)}"
    return node, f"{field} {op} {quote(value)[:-1]}{'*' if prefix else ''}\""


def filters():
    def extend(children):
        return st.one_of(
            st.tuples(st.sampled_from(["and", "or"]), st.lists(children, min_size=2,
                                                                 max_size=3)),
            st.tuples(st.just("not"), children))
    return st.recursive(leaf(), extend, max_leaves=6)


@st.composite
def rendered(draw, tree, ctx="top"):
    """Text for a generated tree under AIP-160 precedence, parenthesised only where needed
    (and sometimes where not)."""
    if isinstance(tree[0], tuple):          # a leaf: (node, text)
        text = tree[1]
        needs = False
    elif tree[0] == "not":
        word = draw(st.sampled_from(["NOT ", "-"]))
        text, needs = word + draw(rendered(tree[1], "not")), False
    else:
        joiner = " AND " if tree[0] == "and" else " OR "
        text = joiner.join(draw(rendered(c, tree[0])) for c in tree[1])
        needs = (tree[0] == "and" and ctx in ("or", "not")) or (tree[0] == "or" and ctx == "not")
    if needs or draw(st.integers(0, 4)) == 0:
        text = f"({text})"
    return text


OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge}


def reference(tree, run):
    if isinstance(tree[0], tuple):
        node = tree[0]
    elif tree[0] == "not":
        return not reference(tree[1], run)
    elif tree[0] == "and":
        return all(reference(c, run) for c in tree[1])
    else:
        return any(reference(c, run) for c in tree[1])
    kind = node[0]
    if kind == "state":
        return (run["state"] == node[2]) == (node[1] == "=")
    if kind == "time":
        return OPS[node[1]](run["create_time_ns"], node[2])
    if kind == "has":
        return node[1] in run["labels"]
    if kind == "str":
        _, name, op, value, prefix = node
        have = run[name]
        if name == "sweep" and value.startswith("sweeps/"):   # Run.sweep's resource name
            have = f"sweeps/{have}" if have else ""
    else:
        _, key, op, value, prefix = node
        if key not in run["labels"]:
            return op == "!="
        have = run["labels"][key]
    hit = have.startswith(value) if prefix else have == value
    return hit == (op == "=")


RUNS = st.lists(st.fixed_dictionaries({
    "state": st.sampled_from(STATES),
    "scenario": st.sampled_from(SCENARIOS),
    "creator": st.sampled_from(CREATORS),
    "display_name": TEXT,
    "sweep": st.sampled_from(["", "sw1"]),
    "labels": st.dictionaries(st.sampled_from(KEYS), TEXT, max_size=3),
    "create_time_ns": TIMES,
}), max_size=14)

PATHS = {"QUEUED": [], "RUNNING": ["RUNNING"], "SUCCEEDED": ["RUNNING", "SUCCEEDED"],
         "FAILED": ["FAILED"], "CANCELLING": ["RUNNING", "CANCELLING"],
         "CANCELLED": ["CANCELLED"]}


class _Clock:
    now = T0

    def __call__(self):
        return self.now


def sort_key(order):
    rank = {s: i for i, s in enumerate(STATES)}

    def key(pair):
        rid, run = pair
        parts = []
        for name, desc in order:
            v = {"create_time": run["create_time_ns"], "display_name": run["display_name"],
                 "state": rank[run["state"]]}[name]
            # every key is an int or a str; negate ints, and invert strs by code point
            parts.append((-v if isinstance(v, int) else tuple(-ord(c) for c in v) + (1,))
                         if desc else (v if isinstance(v, int) else tuple(ord(c) for c in v)))
        return (*parts, rid)
    return key


def _stored(store: RunStore, clock: _Clock, runs: list[dict], deleted: list[bool] = ()
            ) -> dict[str, tuple[dict, bool]]:
    """`runs` (as RUNS draws them) in `store`, walked to their states, the ones `deleted`
    marks soft-deleted: run id -> (run, deleted)."""
    store.create_sweep({}, {}, sweep_id="sw1")
    ids = {}
    for run, gone in zip(runs, [*deleted, *[False] * (len(runs) - len(deleted))]):
        clock.now = run["create_time_ns"]
        rid = store.create_run({}, display_name=run["display_name"], scenario=run["scenario"],
                               creator=run["creator"], labels=run["labels"],
                               sweep_id=run["sweep"])[0].id
        for state in PATHS[run["state"]]:
            store.update_state(rid, state)
        if gone:
            store.soft_delete(rid)
        ids[rid] = (run, gone)
    return ids


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.slow    # generated stores and filters
@given(runs=RUNS, trees=st.lists(filters(), min_size=1, max_size=3), data=st.data(),
       order=st.lists(st.tuples(st.sampled_from(["create_time", "display_name", "state"]),
                                st.booleans()), unique_by=lambda t: t[0], max_size=3),
       page_size=st.integers(1, 6))
def test_list_runs_matches_python_reference(runs, trees, data, order, page_size):
    order_by = ", ".join(f"{n} desc" if d else n for n, d in order)
    with tempfile.TemporaryDirectory() as tmp:
        clock = _Clock()
        with RunStore(Path(tmp) / "runs.db", clock=clock) as store:
            ids = {rid: run for rid, (run, _) in _stored(store, clock, runs).items()}
            effective = order or [("create_time", True)]
            for tree in trees:
                text = data.draw(rendered(tree), label="filter")
                got, token = [], ""
                while True:
                    page, token = store.list_runs(text, order_by, page_size, token)
                    got += [r.id for r in page]
                    if not token:
                        break
                    assert len(got) <= len(runs), "paging does not end"
                wanted = sorted(((rid, run) for rid, run in ids.items()
                                 if reference(tree, run)), key=sort_key(effective))
                assert got == [rid for rid, _ in wanted], text
                # the canonical form means the same thing
                canonical = compile_filter(text).canonical
                assert [r.id for r in store.list_runs(canonical, order_by, 100)[0]] == got


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=RUNS, trees=st.lists(filters(), min_size=1, max_size=3), data=st.data())
def test_count_runs_equals_the_runs_listed_over_all_pages(runs, trees, data):
    deleted = data.draw(st.lists(st.booleans(), min_size=len(runs), max_size=len(runs)),
                        label="deleted")
    with tempfile.TemporaryDirectory() as tmp:
        clock = _Clock()
        with RunStore(Path(tmp) / "runs.db", clock=clock) as store:
            ids = _stored(store, clock, runs, deleted)
            for tree in trees:
                text = data.draw(rendered(tree), label="filter")
                for show_deleted in (False, True):
                    listed, token = 0, ""
                    while True:
                        page, token = store.list_runs(text, "", 2, token,
                                                      show_deleted=show_deleted)
                        listed += len(page)
                        if not token:
                            break
                    wanted = sum(1 for run, gone in ids.values()
                                 if reference(tree, run) and (show_deleted or not gone))
                    assert listed == wanted, text
                    assert store.count_runs(text, show_deleted=show_deleted) == listed, text
            live = [run["state"] for run, gone in ids.values() if not gone]
            assert {s.value: n for s, n in store.count_by_state().items()} == \
                {s: live.count(s) for s in STATES}


def test_count_runs_refuses_a_bad_filter_like_list_runs(tmp_path):
    with RunStore(tmp_path / "runs.db") as store:
        store.create_run({})
        for call in (lambda f: store.list_runs(f), lambda f: store.count_runs(f)):
            with pytest.raises(FilterError) as e:
                call('state = "DONE"')
            assert e.value.column == 9 and 'unknown state "DONE"' in e.value.message


@settings(max_examples=200, deadline=None)
@given(tree=filters(), data=st.data())
def test_canonical_form_is_a_fixed_point(tree, data):
    text = data.draw(rendered(tree))
    first = compile_filter(text)
    again = compile_filter(first.canonical)
    assert again == first
    assert parse_filter(render(parse_filter(text))) == parse_filter(text)


def test_scenario_matches_by_name_or_resource_name(tmp_path):
    from compactsim.server.store import RunStore
    with RunStore(tmp_path / "runs.db") as store:
        a, _ = store.create_run({"seed": 1}, scenario="churn")
        store.create_run({"seed": 2}, scenario="thpscale")
        store.create_run({"seed": 3})
        for text in ('scenario = "churn"', 'scenario = "scenarios/churn"'):
            runs, _ = store.list_runs(text, None, 10, None)
            assert [r.id for r in runs] == [a.id], text
        runs, _ = store.list_runs('scenario = "scenarios/*"', None, 10, None)
        assert len(runs) == 2


def test_end_time_filters_and_orders(tmp_path):
    """end_time, documented as a filter and order_by field: runs that have not ended have
    none (they match only !=, and order after every end time), pages join up."""
    clock = _Clock()
    with RunStore(tmp_path / "runs.db", clock=clock) as store:
        ended = {}
        for i, (name, end_s) in enumerate([("a", 30), ("b", 10), ("c", None), ("d", 20)]):
            clock.now = T0 + i * S
            rid = store.create_run({}, display_name=name)[0].id
            if end_s is not None:
                store.update_state(rid, RunState.RUNNING)
                clock.now = T0 + end_s * S
                store.update_state(rid, RunState.SUCCEEDED)
            ended[name] = rid

        def names(filter_="", order_by="", page_size=0):
            got, token = [], ""
            while True:
                page, token = store.list_runs(filter_, order_by, page_size, token)
                got += [r.display_name for r in page]
                if not token:
                    return got

        t15 = '"2024-05-01T12:00:15Z"'
        assert sorted(names(f"end_time > {t15}")) == ["a", "d"]
        assert sorted(names(f"end_time <= {t15}")) == ["b"]
        assert sorted(names(f"end_time != {t15}")) == ["a", "b", "c", "d"]
        assert sorted(names(f"NOT end_time > {t15}")) == ["b", "c"]
        assert store.count_runs(f"end_time >= {t15}") == 2
        for size in (0, 1, 3):
            assert names(order_by="end_time", page_size=size) == ["b", "d", "a", "c"]
            assert names(order_by="end_time desc", page_size=size) == ["c", "a", "d", "b"]
        assert names(f"end_time < {t15} OR state = QUEUED", "end_time desc") == ["c", "b"]
        assert "end_time" in compile_filter(f"end_time < {t15}").canonical
