"""The metrics listener: a small WSGI app, each running run a Prometheus target.

- `/metrics`: the service's own metrics (prometheus_client's `make_wsgi_app` on the
  service's private registry).
- `/sd`: Prometheus HTTP service discovery, one target group per run that is running or
  ended less than the manager's `target_linger_s` ago (`RunManager.targets`): the target is
  this listener (as the client reached it) with ``__param_target=runs/ID`` and
  ``__meta_compactsim_{run,scenario,display_name}``, all known when the run is created,
  so a target's labels never change (its kernel profile and design are in
  `compactsim_run_info`, to join on).
- `/probe?target=runs/ID`: that run's simulated machine (`server.collector.RunCollector`),
  its final state for a run that has ended: 400 without a target, 404 for an unknown run
  or one no longer a target.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    make_wsgi_app,
)

from compactsim.server import metrics_listener
from compactsim.server.collector import RunCollector

log = logging.getLogger(__name__)

TARGET = re.compile(r"runs/([A-Za-z0-9_.-]+)")


def _run_info(manager: Any, run_id: str, kernel: dict | None = None) -> dict[str, str]:
    info = {"run": f"runs/{run_id}", "display_name": "", "scenario": "",
            **{k: str(v) for k, v in (kernel or {}).items()}}
    try:
        rec = manager.store.get_run(run_id)
        info["display_name"] = rec.display_name
        info["scenario"] = rec.scenario
    except Exception:
        log.debug("run %s: no record", run_id, exc_info=True)
    info.setdefault("design", "")
    info.setdefault("profile", "")
    return info


class _AsLookedUp:
    """A target's snapshot as `targets()` returned it, for `RunCollector`."""

    def __init__(self, live: Any):
        self.live = live

    def latest_snapshot(self, run_id: str) -> dict | None:
        return self.live.snapshot


def sd_groups(manager: Any, address: str) -> list[dict]:
    """HTTP-SD target groups: one per target run, all pointing at `address`."""
    groups = []
    for run_id in sorted(manager.targets()):
        info = _run_info(manager, run_id)
        groups.append({"targets": [address], "labels": {
            "__param_target": f"runs/{run_id}",
            "__meta_compactsim_run": f"runs/{run_id}",
            "__meta_compactsim_display_name": info["display_name"],
            "__meta_compactsim_scenario": info["scenario"]}})
    return groups


def make_app(manager: Any, registry: CollectorRegistry):
    """The WSGI app of the metrics listener."""
    metrics = make_wsgi_app(registry)

    def reply(start_response, status: str, body: bytes, ctype: str = "text/plain"):
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path in ("/metrics", "/"):
            return metrics(environ, start_response)
        if path == "/sd":
            address = environ.get("HTTP_HOST") or (
                f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}")
            body = json.dumps(sd_groups(manager, address)).encode()
            return reply(start_response, "200 OK", body, "application/json")
        if path == "/probe":
            target = parse_qs(environ.get("QUERY_STRING", "")).get("target", [""])[0]
            if not target:
                return reply(start_response, "400 Bad Request", b"missing target=runs/ID\n")
            m = TARGET.fullmatch(target)
            live = manager.targets().get(m.group(1)) if m else None
            if live is None:
                return reply(start_response, "404 Not Found",
                             f"no run {target!r} to probe (unknown, or ended too long "
                             f"ago)\n".encode())
            # One progress message's state: the snapshot and the kernel labels of the
            # same look at the targets, not a snapshot that came in after it.
            probe = CollectorRegistry()
            probe.register(RunCollector(_AsLookedUp(live), live.run_id,
                                        _run_info(manager, live.run_id, live.kernel)))
            return reply(start_response, "200 OK", generate_latest(probe),
                         CONTENT_TYPE_LATEST)
        return reply(start_response, "404 Not Found", b"not found\n")

    return app


def start_exporter(manager: Any, registry: CollectorRegistry, host: str, port: int,
                   tls: ssl.SSLContext | None = None, lookup: Any = None):
    """Serve `make_app` on host:port in a daemon thread (server.metrics_listener: HTTPS
    with `tls`, a bearer token `lookup` knows or a client certificate when `lookup` is
    given); returns (server, thread)."""
    return metrics_listener.serve(make_app(manager, registry), host, port, tls=tls,
                                  lookup=lookup)
