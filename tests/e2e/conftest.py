"""Fixtures of the end-to-end tests (helpers in serverproc.py).

Every test here starts real servers and worker processes: all are marked slow, so the
fast tier (`make test-fast`) leaves them to the full suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from serverproc import Server

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(*extra, data_dir=None, **kw):
        s = Server(data_dir or tmp_path, *extra, **kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


@pytest.fixture
def server(make_server):
    return make_server()
