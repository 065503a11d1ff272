"""server.auth without a server: the token-file grammar, the Bearer header, reloads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compactsim.server.auth import (
    ANONYMOUS,
    Authenticator,
    Caller,
    TokenFileError,
    Tokens,
    bearer,
    parse_token_file,
)

TOKEN = st.text(st.sampled_from("abcdefABCDEF0123456789-_."), min_size=16, max_size=40)
USER = st.from_regex(r"[a-z][a-z0-9._@-]{0,20}", fullmatch=True)


@given(st.dictionaries(TOKEN, st.tuples(USER, st.sampled_from(["", "user", "admin"])),
                       min_size=1, max_size=8), TOKEN)
def test_every_listed_token_maps_to_its_user_and_no_other_does(entries, other):
    text = "# tokens\n\n" + "".join(f"  {t}\t{u} {r}  # note\n" for t, (u, r) in entries.items())
    table = parse_token_file(text)
    tokens = Tokens.__new__(Tokens)
    tokens._by_digest = table
    for t, (u, r) in entries.items():
        assert tokens.lookup(t) == Caller(u, admin=r == "admin")
    if other not in entries:
        assert tokens.lookup(other) is None
    assert all(len(k) == 32 for k in table)   # digests, never the tokens themselves
    assert not any(t.encode() in table for t in entries)


@pytest.mark.parametrize("metadata, token", [
    ([("authorization", "Bearer abc")], "abc"),
    ([("x", "y"), ("authorization", "bearer  abc ")], "abc"),
    ([("authorization", "Basic abc")], None),
    ([("authorization", "Bearer ")], None),
    ([], None),
    (None, None),
])
def test_bearer(metadata, token):
    assert bearer(metadata) == token


def test_reload_keeps_the_tokens_in_force_on_a_bad_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("0123456789abcdef0 alice\n")
    tokens = Tokens(path)
    auth = Authenticator(tokens)
    md = [("authorization", "Bearer 0123456789abcdef0")]
    assert auth.caller_of(md) == Caller("alice")
    path.write_text("0123456789abcdef0 alice root\n")
    with pytest.raises(TokenFileError, match=r"tokens:1: role 'root'"):
        tokens.reload()
    assert auth.caller_of(md) == Caller("alice")
    path.unlink()
    with pytest.raises(TokenFileError, match="No such file"):
        tokens.reload()
    assert auth.caller_of(md) == Caller("alice")
    path.write_text("fedcba98765432100 bob admin\n")
    assert tokens.reload() == 1
    assert auth.caller_of(md) is None
    assert auth.caller_of([("authorization", "Bearer fedcba98765432100")]) == Caller("bob", True)


def test_without_a_token_file_everyone_is_anonymous():
    auth = Authenticator()
    assert not auth.required
    assert auth.caller_of([]) == auth.caller_of([("authorization", "Bearer x")]) == ANONYMOUS
    assert not ANONYMOUS.admin
