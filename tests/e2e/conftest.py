"""The end-to-end tests' marking (helpers in serverproc.py; the server fixtures,
make_server, make_module_server and server, in tests/conftest.py).

Every test here starts real servers and worker processes: all are marked slow, so the
fast tier (`make test-fast`) leaves them to the full suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
