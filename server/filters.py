"""Filters and orderings for ListRuns: AIP-160 filter strings and AIP-132 `order_by`.

A filter is parsed by a small recursive-descent parser into a tree, checked field by field
(known fields, the operators each supports, state names, RFC 3339 timestamps), and compiled
to a parameterised SQL WHERE clause over the store's `runs` table: values only ever travel
as parameters. Every error is a `FilterError` naming the 1-based column and what was
expected there.

Grammar (the subset of AIP-160 that ListRuns needs). As in AIP-160, OR binds tighter than
AND: `a AND b OR c` means `a AND (b OR c)`; parentheses make any intent explicit.

    filter      = [ expression ] EOF
    expression  = factor { "AND" factor }
    factor      = term { "OR" term }
    term        = ( "NOT" | "-" ) term | simple
    simple      = "(" expression ")" | restriction
    restriction = field comparator value
                | "labels" "." key ":" "*"             (the run has label `key`)
    field       = "state" | "scenario" | "creator" | "display_name" | "sweep"
                | "create_time" | "end_time" | "labels" "." key
    key         = NAME | STRING
    comparator  = "=" | "!=" | "<" | "<=" | ">" | ">="
    value       = STRING | NAME

STRING is double-quoted with the escapes \\" \\\\ and \\*; an unescaped `*` at the end of a
string value asks for a prefix match (`display_name = "zram-*"`). NAME is a bare word
(`[A-Za-z0-9_][A-Za-z0-9_-]*`); AND, OR and NOT are keywords in upper case.

What each field accepts:
    state                        = != with a run state name (QUEUED, RUNNING... as
                                 compactsim.codec.runstate lists them; quoted or bare)
    scenario, creator,           = != with a string (a trailing * matches a prefix)
    display_name, sweep          (sweep and scenario: the bare id or name, or the resource
                                 name the Run shows, "sweeps/ID" or "scenarios/NAME";
                                 "sweeps/*": any run of a sweep)
    labels.KEY                   = != as for strings; a run without the label is != any
                                 value; `labels.KEY:*` tests presence
    create_time, end_time        = != < <= > >= with an RFC 3339 timestamp in quotes
                                 ("2024-05-01T12:00:00Z", "2024-05-01T14:00:00.5+02:00");
                                 a run that has not ended has no end_time: it matches
                                 only != (and NOT of the others)

No comparison is NULL (a missing end_time is tested explicitly), so NOT always means "the
other runs".

Limits: at most MAX_DEPTH levels of parentheses and NOT, at most MAX_RESTRICTIONS
comparisons, and timestamps within the 64-bit nanosecond range the store keeps
(1677-09-21 to 2262-04-11); beyond them the error names the column where the limit is
crossed. Text echoed in an error is cut to a few dozen characters.

`order_by` (AIP-132): comma-separated fields among create_time, end_time, display_name and
state, each optionally followed by `asc` or `desc`. State orders by lifecycle (QUEUED
first); runs that have not ended order after every end_time (first with `desc`).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from typing import cast

from compactsim.codec.runstate import NAMES

STRING_FIELDS = ("scenario", "creator", "display_name", "sweep")
TIME_FIELDS = ("create_time", "end_time")
FIELDS = ("state", *STRING_FIELDS, *TIME_FIELDS, "labels")
ORDER_FIELDS = ("create_time", "end_time", "display_name", "state")

# Field -> SQL column of the store's `runs` table (server/store/schema.py keeps them in step).
COLUMNS = {
    "state": "runs.state",
    "scenario": "runs.scenario",
    "creator": "runs.creator",
    "display_name": "runs.display_name",
    "sweep": "runs.sweep_id",
    "create_time": "runs.create_time_ns",
    "end_time": "runs.end_time_ns",   # NULL until the run ends
    "labels": "runs.labels_json",
}

SWEEP_PREFIX = "sweeps/"


def _resource_name(column: str, prefix: str) -> str:
    """SQL for the resource name a field shows ("sweeps/ID"), or '' when it is unset."""
    return f"(CASE WHEN {column} = '' THEN '' ELSE '{prefix}' || {column} END)"


# Fields that also match by resource name: field -> (name prefix, SQL of the name).
RESOURCE_NAMES = {
    "sweep": (SWEEP_PREFIX, _resource_name(COLUMNS["sweep"], SWEEP_PREFIX)),
    "scenario": ("scenarios/", _resource_name(COLUMNS["scenario"], "scenarios/")),
}

COMPARATORS = ("=", "!=", "<", "<=", ">", ">=")
_EQUALITY = ("=", "!=")

MAX_DEPTH = 32            # nested parentheses and NOTs
MAX_RESTRICTIONS = 100    # comparisons and label tests in one filter
_NS_MIN, _NS_MAX = -2**63, 2**63 - 1   # create_time_ns is a 64-bit integer
_SHOWN = 40               # characters of the input quoted back in an error


def _shown(text: str, quote: bool = True) -> str:
    """`text` for an error message (quoted unless it is a token as written), cut short
    when long."""
    cut = text if len(text) <= _SHOWN else text[:_SHOWN]
    return (repr(cut) if quote else cut) + ("..." if cut != text else "")


class QueryError(ValueError):
    """A bad `filter` or `order_by`: `parameter` names which, `column` (1-based) where."""

    parameter = "query"

    def __init__(self, text: str, column: int, message: str):
        self.text = text
        self.column = column
        self.message = message
        super().__init__(f"{self.parameter}: column {column}: {message}")

    def pretty(self) -> str:
        """The message, the offending text and a caret under the column."""
        return f"{self}\n  {self.text}\n  {' ' * (self.column - 1)}^"


class FilterError(QueryError):
    """A filter string that does not parse or does not make sense."""

    parameter = "filter"


class OrderByError(QueryError):
    """An order_by string naming an unknown field or malformed."""

    parameter = "order_by"


# -- the tree -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Compare:
    """`field op value`. `value` is a str, or ns since the epoch for create_time."""

    field: str
    op: str
    value: str | int
    key: str | None = None   # the label key when field == "labels"
    prefix: bool = False     # a trailing * : match values starting with `value`


@dataclass(frozen=True, slots=True)
class HasLabel:
    key: str


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


Node = Compare | HasLabel | And | Or | Not


# -- the lexer ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Token:
    kind: str           # NAME STRING OP LPAREN RPAREN DOT COLON STAR MINUS EOF
    text: str           # as written
    column: int         # 1-based
    value: str = ""     # STRING: the decoded text
    stars: tuple = ()   # STRING: offsets in `value` of unescaped '*'


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")
_PUNCT = {"(": "LPAREN", ")": "RPAREN", ".": "DOT", ":": "COLON", "*": "STAR", "-": "MINUS"}
_ESCAPES = {'"': '"', "\\": "\\", "*": "*"}


def _lex(text: str) -> list[_Token]:
    tokens, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == '"':
            start, out, stars = i, [], []
            i += 1
            while True:
                if i >= n:
                    raise FilterError(text, start + 1, "unterminated string: expected a "
                                      "closing '\"'")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n or text[i + 1] not in _ESCAPES:
                        raise FilterError(text, i + 1, 'unknown escape: expected \\", '
                                          "\\\\ or \\* inside a string")
                    out.append(_ESCAPES[text[i + 1]])
                    i += 2
                    continue
                if c == "*":
                    stars.append(len(out))
                out.append(c)
                i += 1
            tokens.append(_Token("STRING", text[start:i], start + 1, "".join(out), tuple(stars)))
        elif c in "=!<>":
            two = text[i:i + 2]
            if two in ("!=", "<=", ">="):
                tokens.append(_Token("OP", two, i + 1))
                i += 2
            elif c == "!":
                raise FilterError(text, i + 1, "expected '!=' (NOT or '-' negates)")
            else:
                tokens.append(_Token("OP", c, i + 1))
                i += 1
        elif c in _PUNCT:
            tokens.append(_Token(_PUNCT[c], c, i + 1))
            i += 1
        elif m := _NAME.match(text, i):
            tokens.append(_Token("NAME", m.group(), i + 1))
            i = m.end()
        else:
            raise FilterError(text, i + 1, f"unexpected character {c!r}")
    tokens.append(_Token("EOF", "", n + 1))
    return tokens


# -- timestamps -----------------------------------------------------------------------------

_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
                      r"(?:([Zz])|([+-])(\d{2}):(\d{2}))")


def parse_rfc3339_ns(s: str) -> int:
    """An RFC 3339 timestamp as ns since the epoch (ValueError if it is not one)."""
    m = _RFC3339.fullmatch(s)
    if not m:
        raise ValueError("not of the form YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} is out of range")
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise ValueError(f"day {day} is out of range for {year:04d}-{month:02d}")
    if hour > 23 or minute > 59 or second > 59:  # leap seconds are not representable
        raise ValueError("time of day is out of range")
    offset_s = 0
    if not m.group(8):
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ValueError("UTC offset is out of range")
        offset_s = (oh * 3600 + om * 60) * (1 if m.group(9) == "+" else -1)
    frac_ns = int((m.group(7) or "").ljust(9, "0"))
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset_s
    ns = seconds * 1_000_000_000 + frac_ns
    if not _NS_MIN <= ns <= _NS_MAX:
        raise ValueError("out of range: timestamps run from 1677-09-21T00:12:43Z to "
                         "2262-04-11T23:47:16Z")
    return ns


# -- the parser -----------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _lex(text)
        self.i = 0
        self.depth = 0          # open parentheses and NOTs around the current token
        self.restrictions = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def error(self, tok: _Token, message: str) -> FilterError:
        return FilterError(self.text, tok.column, message)

    def found(self, tok: _Token) -> str:
        return "the end of the filter" if tok.kind == "EOF" else _shown(tok.text)

    def nest(self, tok: _Token) -> None:
        """One more level of parentheses or NOT, opened at `tok`."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(tok, f"nested too deeply: at most {MAX_DEPTH} levels of "
                                  f"parentheses and NOT")

    def keyword(self, word: str) -> bool:
        if self.tok.kind == "NAME" and self.tok.text == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Node | None:
        if self.tok.kind == "EOF":
            return None
        node = self.expression()
        if self.tok.kind != "EOF":
            tok = self.tok
            hint = (f" (operators are upper case: {tok.text.upper()})"
                    if tok.kind == "NAME" and tok.text.upper() in ("AND", "OR", "NOT") else "")
            raise self.error(tok, f"expected AND, OR or the end of the filter, "
                                  f"found {self.found(tok)}{hint}")
        return node

    def expression(self) -> Node:
        items = [self.factor()]
        while self.keyword("AND"):
            items.append(self.factor())
        return items[0] if len(items) == 1 else And(tuple(items))

    def factor(self) -> Node:
        items = [self.term()]
        while self.keyword("OR"):
            items.append(self.term())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def term(self) -> Node:
        tok = self.tok
        if self.keyword("NOT") or tok.kind == "MINUS":
            if tok.kind == "MINUS":
                self.i += 1
            self.nest(tok)
            node = Not(self.term())
            self.depth -= 1
            return node
        return self.simple()

    def simple(self) -> Node:
        tok = self.tok
        if tok.kind == "LPAREN":
            self.i += 1
            self.nest(tok)
            node = self.expression()
            if self.tok.kind != "RPAREN":
                raise self.error(self.tok, f"expected AND, OR or ')' to close the '(' at "
                                           f"column {tok.column}, found {self.found(self.tok)}")
            self.i += 1
            self.depth -= 1
            return node
        return self.restriction()

    def restriction(self) -> Node:
        tok = self.tok
        if tok.kind != "NAME" or tok.text in ("AND", "OR", "NOT"):
            raise self.error(tok, f"expected a comparison such as state = \"RUNNING\" "
                                  f"or '(', found {self.found(tok)}")
        self.restrictions += 1
        if self.restrictions > MAX_RESTRICTIONS:
            raise self.error(tok, f"too many comparisons: at most {MAX_RESTRICTIONS} in one "
                                  f"filter")
        self.i += 1
        field, key = tok.text, None
        if field not in FIELDS:
            raise self.error(tok, f"unknown field {_shown(field)}: expected one of "
                                  f"{', '.join(sorted(set(FIELDS) - {'labels'}))} or labels.KEY")
        if field == "labels":
            if self.tok.kind != "DOT":
                raise self.error(self.tok, "expected '.' and a label key after 'labels' "
                                           "(labels.KEY)")
            self.i += 1
            key = self.label_key()
            if self.tok.kind == "COLON":
                self.i += 1
                if self.tok.kind != "STAR":
                    raise self.error(self.tok, "expected '*' after ':' (labels.KEY:* tests "
                                               f"that a run has the label), found "
                                               f"{self.found(self.tok)}")
                self.i += 1
                return HasLabel(key)
        elif self.tok.kind == "DOT":
            raise self.error(self.tok, f"{field!r} has no subfields")
        op_tok = self.tok
        if op_tok.kind == "COLON":
            raise self.error(op_tok, "':' is only for labels.KEY:*; compare with = or !=")
        if op_tok.kind != "OP":
            raise self.error(op_tok, f"expected a comparator ({' '.join(COMPARATORS)}) after "
                                     f"{field if key is None else 'labels.' + key}, found "
                                     f"{self.found(op_tok)}")
        self.i += 1
        op = op_tok.text
        if field not in TIME_FIELDS and op not in _EQUALITY:
            raise self.error(op_tok, f"{field} supports only = and != (found {op})")
        return self.value(field, key, op)

    def label_key(self) -> str:
        tok = self.tok
        if tok.kind == "NAME":
            self.i += 1
            return tok.text
        if tok.kind == "STRING":
            self.i += 1
            if tok.stars:
                raise self.error(tok, "a label key cannot hold an unescaped '*'")
            if not tok.value:
                raise self.error(tok, "a label key cannot be empty")
            return tok.value
        raise self.error(tok, f"expected a label key after 'labels.', found {self.found(tok)}")

    def value(self, field: str, key: str | None, op: str) -> Compare:
        tok = self.tok
        if tok.kind not in ("STRING", "NAME") or (tok.kind == "NAME" and
                                                  tok.text in ("AND", "OR", "NOT")):
            what = ("an RFC 3339 timestamp in double quotes" if field in TIME_FIELDS
                    else "a value (a string in double quotes)")
            raise self.error(tok, f"expected {what}, found {self.found(tok)}")
        self.i += 1
        text = tok.value if tok.kind == "STRING" else tok.text
        stars = tok.stars if tok.kind == "STRING" else ()
        if field in TIME_FIELDS:
            if tok.kind != "STRING":
                raise self.error(tok, "expected an RFC 3339 timestamp in double quotes, "
                                      'e.g. "2024-05-01T12:00:00Z"')
            try:
                return Compare(field, op, parse_rfc3339_ns(text))
            except ValueError as e:
                raise self.error(tok, f"bad timestamp {_shown(text)}: {e}") from None
        prefix = False
        if stars:
            if stars != (len(text) - 1,):
                raise self.error(tok, "'*' is only allowed at the end of a value (a prefix "
                                      "match); write \\* for a literal star")
            prefix, text = True, text[:-1]
        if field == "state":
            if prefix or text not in NAMES:
                raise self.error(tok, f"unknown state {_shown(tok.text, False)}: expected one of "
                                      f"{', '.join(NAMES)}")
        return Compare(field, op, text, key=key, prefix=prefix)


def parse_filter(text: str) -> Node | None:
    """The tree of a filter string, or None for an empty filter. Raises FilterError."""
    return _Parser(text).parse()


# -- rendering and compiling ----------------------------------------------------------------

def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*") + '"'


def render(node: Node | None) -> str:
    """A canonical, fully parenthesised filter string that parses back to `node`."""
    if node is None:
        return ""
    if isinstance(node, And):
        return "(" + " AND ".join(render(n) for n in node.items) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(render(n) for n in node.items) + ")"
    if isinstance(node, Not):
        return f"NOT {render(node.item)}" if isinstance(node.item, (Compare, HasLabel)) \
            else f"NOT ({render(node.item)})"
    if isinstance(node, HasLabel):
        return f"labels.{_quote(node.key)}:*"
    field = node.field if node.key is None else f"labels.{_quote(node.key)}"
    if node.field in TIME_FIELDS:
        return f"{field} {node.op} {_ns_rfc3339(cast(int, node.value))}"
    return f"{field} {node.op} {_quote(cast(str, node.value))[:-1]}{'*' if node.prefix else ''}\""


def _ns_rfc3339(ns: int) -> str:
    s, frac = divmod(ns, 1_000_000_000)
    t = time.gmtime(s)
    return f'"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:' \
           f'{t.tm_min:02d}:{t.tm_sec:02d}.{frac:09d}Z"'


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A WHERE clause (`sql`, "1" when the filter is empty) and its parameters."""

    sql: str
    params: tuple
    canonical: str   # render() of the tree: equal filters give equal strings


def _compile(node: Node, params: list) -> str:
    if isinstance(node, And):
        return "(" + " AND ".join(_compile(n, params) for n in node.items) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(_compile(n, params) for n in node.items) + ")"
    if isinstance(node, Not):
        return f"(NOT {_compile(node.item, params)})"
    labels = COLUMNS["labels"]
    if isinstance(node, HasLabel):
        params.append(node.key)
        return f"EXISTS (SELECT 1 FROM json_each({labels}) AS l WHERE l.key = ?)"
    if node.field == "create_time":
        params.append(node.value)
        return f"({COLUMNS['create_time']} {node.op} ?)"
    if node.field == "end_time":   # NULL (not ended) is unequal to any time, and no more
        params.append(node.value)
        column = COLUMNS["end_time"]
        if node.op == "!=":
            return f"({column} IS NULL OR {column} != ?)"
        return f"({column} IS NOT NULL AND {column} {node.op} ?)"
    if node.field == "labels":
        params.append(node.key)
        match = _match_sql("l.value", node, params)
        sql = f"EXISTS (SELECT 1 FROM json_each({labels}) AS l WHERE l.key = ? AND {match})"
    elif node.field in RESOURCE_NAMES and isinstance(node.value, str) \
            and node.value.startswith(RESOURCE_NAMES[node.field][0]):
        # the resource name the Run shows ("sweeps/ID", "scenarios/NAME"), else ""
        sql = _match_sql(RESOURCE_NAMES[node.field][1], node, params)
    else:
        sql = _match_sql(COLUMNS[node.field], node, params)
    return f"(NOT {sql})" if node.op == "!=" else f"({sql})"


def _match_sql(column: str, node: Compare, params: list) -> str:
    if node.prefix:
        params.extend((len(cast(str, node.value)), node.value))
        return f"substr({column}, 1, ?) = ?"
    params.append(node.value)
    return f"{column} = ?"


def compile_filter(text: str) -> CompiledFilter:
    """Parse `text` and compile it to a parameterised WHERE clause over `runs`."""
    node = parse_filter(text)
    if node is None:
        return CompiledFilter("1", (), "")
    params: list = []
    sql = _compile(node, params)
    return CompiledFilter(sql, tuple(params), render(node))


# -- order_by -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OrderField:
    name: str
    descending: bool = False


_ORDER_ITEM = re.compile(r"\s*([^\s,]*)(?:\s+([^\s,]+))?\s*([^,]*)")


def parse_order_by(text: str) -> tuple[OrderField, ...]:
    """`"create_time desc, display_name"` -> fields; () for an empty string."""
    if not text.strip():
        return ()
    out: list[OrderField] = []
    pos = 0
    for part in text.split(","):
        m = _ORDER_ITEM.fullmatch(part)
        assert m is not None            # every group may be empty: any part matches
        name, direction, rest = m.group(1), m.group(2), m.group(3)
        col = pos + m.start(1) + 1
        if not name:
            raise OrderByError(text, col, "expected a field name (create_time, end_time, "
                                          "display_name or state)")
        if name not in ORDER_FIELDS:
            raise OrderByError(text, col, f"unknown field {_shown(name)}: expected one of "
                                          f"{', '.join(ORDER_FIELDS)}")
        if any(f.name == name for f in out):
            raise OrderByError(text, col, f"{name} appears more than once")
        if direction is not None and direction.lower() not in ("asc", "desc"):
            raise OrderByError(text, pos + m.start(2) + 1,
                               f"expected 'asc', 'desc' or ',' after {name}, "
                               f"found {_shown(direction)}")
        if rest:
            raise OrderByError(text, pos + m.start(3) + 1,
                               f"expected ',' or the end of order_by, found {_shown(rest)}")
        out.append(OrderField(name, direction is not None and direction.lower() == "desc"))
        pos += len(part) + 1
    return tuple(out)


def render_order_by(fields: tuple[OrderField, ...]) -> str:
    return ", ".join(f"{f.name} desc" if f.descending else f.name for f in fields)
