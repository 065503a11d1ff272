"""The end-to-end tests' marking (helpers in serverproc.py; the server fixtures,
make_server, make_module_server and server, in tests/conftest.py).

Every test here starts real servers and worker processes: all are marked slow, so the
fast tier (`make test-fast`) leaves them to the full suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from serverproc import LAB_TOKENS

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)



@pytest.fixture
def token_file(tmp_path: Path):
    """`token_file(text)`: `text` (str or bytes) written to tmp_path/tokens, mode 0600 as
    the server wants a token file; returns the path. Called again, it rewrites the file."""
    path = tmp_path / "tokens"

    def write(text: str | bytes) -> Path:
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        path.chmod(0o600)
        return path

    return write


@pytest.fixture
def lab_server(make_server, token_file):
    """`lab_server(*args, data_dir=)`: a server whose token file (tmp_path/tokens) has
    serverproc.LAB_TOKENS, alice and bob users and root an admin; its stub is alice's."""
    def make(*extra: str, **kw):
        tokens = token_file("".join(f"{t} {u}{' admin' if u == 'root' else ''}\n"
                                    for u, t in LAB_TOKENS.items()))
        return make_server("--token-file", str(tokens), *extra, token=LAB_TOKENS["alice"], **kw)

    return make
