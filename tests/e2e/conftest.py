"""Fixtures of the end-to-end tests (helpers in serverproc.py)."""

from __future__ import annotations

import pytest
from serverproc import Server


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
