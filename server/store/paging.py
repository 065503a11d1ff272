"""Pages of lists: page sizes, opaque page tokens, keyset conditions, pages cut to a byte
budget, and evenly spaced downsampling of a series.

Page tokens are opaque: base64 of what the next page starts after (the last row's sort
key, or a position) and a hash of the query that issued them, so a token cannot be
replayed against another filter or order.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from compactsim.server.store.errors import InvalidArgument, InvalidPageToken

T = TypeVar("T")

NOT_ISSUED = "page_token is not one this server issued; start again without a page_token"


def page_size(size: int, default: int, maximum: int) -> int:
    if size < 0:
        raise InvalidArgument(f"page_size must not be negative (got {size})")
    return min(size or default, maximum)


def query_hash(*parts: Any) -> str:
    """What a token is bound to: the query's kind and every parameter that shapes it."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def encode_token(query: str, body: dict) -> str:
    raw = json.dumps({"h": query, **body}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: str) -> dict:
    """The body of a token issued for `query` (InvalidPageToken for any other)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        if not isinstance(body, dict) or not isinstance(body.get("h"), str):
            raise ValueError
    except (ValueError, TypeError):
        raise InvalidPageToken(NOT_ISSUED) from None
    if body["h"] != query:
        raise InvalidPageToken("page_token was issued for a different filter, order_by or "
                               "query; send the same ones as on the first page, or start "
                               "again without a page_token")
    return body


def bindable(v: Any) -> bool:
    """A sort key a page token may carry: a 64-bit integer or text SQLite can bind."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return -2**63 <= v < 2**63
    if isinstance(v, str):
        try:
            v.encode()
        except UnicodeEncodeError:   # a lone surrogate from a \ud800 escape
            return False
        return True
    return False


def after_key(exprs: Sequence[tuple[str, bool]], last: Any) -> tuple[str, list]:
    """The WHERE term (and its parameters) selecting the rows after the sort key `last`
    (from a token) in the order of `exprs`, (SQL expression, descending) pairs."""
    if not isinstance(last, list) or len(last) != len(exprs) or not all(
            bindable(v) for v in last):
        raise InvalidPageToken(NOT_ISSUED)
    ors, params = [], []
    for i, (expr, desc) in enumerate(exprs):
        terms = [f"{e} = ?" for e, _ in exprs[:i]] + [f"{expr} {'<' if desc else '>'} ?"]
        params.extend(last[:i + 1])
        ors.append("(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(ors) + ")", params


def fitting(items: Sequence[T], weigh: Callable[[T], int] | None, max_weight: int) -> int:
    """How many of `items`, from the first, a page holds: all without `weigh`, else those
    before the one that takes the sum of `weigh(item)` past `max_weight` (one at least)."""
    if weigh is None:
        return len(items)
    total = 0
    for n, item in enumerate(items):
        total += weigh(item)
        if total > max_weight and n:
            return n
    return len(items)


def downsample_indices(n: int, max_points: int) -> Callable[[int], int]:
    """For a series of n points kept to at most max_points (>= 2, or 0 for all): position
    p -> index of the p-th kept point. Kept points are evenly spaced, the first and the
    last always among them; there are min(n, max_points) of them."""
    m = n if max_points == 0 else min(n, max_points)
    if m <= 1 or m == n:
        return lambda p: p
    # round(p * (n - 1) / (m - 1)), half up, in integers; the step is >= 1 so no repeats.
    return lambda p: (2 * p * (n - 1) + (m - 1)) // (2 * (m - 1))
