"""The service's own metrics beyond runs-by-state and queue depth (server.main._Collector):

- `compactsim_run_wall_seconds` (histogram): wall time of each run that ended (end - start),
- `compactsim_simulated_events_total` (counter): SimPy events processed by all runs,
- gRPC server metrics under go-grpc-prometheus's names, which gRPC dashboards query:
  `grpc_server_started_total`, `grpc_server_handled_total{grpc_code}` and the histogram
  `grpc_server_handling_seconds`, by grpc_type, grpc_service, grpc_method (a grpc.aio server
  interceptor; methods the server does not serve are all "unknown").

No run-id labels. The first two are brought up to date at scrape time from the store (the
manager is not hooked): runs that ended, and event counts that grew, since the last scrape.
What existed when the server started is the baseline, so a restart does not count it again.
A scrape reads only the runs added since the last one and those it saw unfinished
(`RunStore.runs_changed`): its cost follows the runs in flight, not the runs ever made. A run
deleted before it ended still counts (its events were simulated).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger(__name__)

WALL_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))


class ServiceMetrics:
    def __init__(self, manager: Any):
        self.manager = manager
        self.registry = CollectorRegistry(auto_describe=True)
        self.wall = Histogram("compactsim_run_wall_seconds",
                              "Wall-clock time of runs that ended, start to end, seconds",
                              buckets=WALL_BUCKETS, registry=self.registry)
        self.events = Counter("compactsim_simulated_events",
                              "SimPy events processed by all runs",
                              registry=self.registry)
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.grpc_started = Counter("grpc_server_started",
                                    "Total number of RPCs started on the server.",
                                    labels, registry=self.registry)
        self.grpc_handled = Counter("grpc_server_handled",
                                    "Total number of RPCs completed on the server, "
                                    "regardless of success or failure.",
                                    [*labels, "grpc_code"], registry=self.registry)
        self.grpc_handling = Histogram("grpc_server_handling_seconds",
                                       "Histogram of response latency (seconds) of gRPC "
                                       "that had been application-level handled by the "
                                       "server.", labels, buckets=HANDLING_BUCKETS,
                                       registry=self.registry)
        self.interceptor = _Interceptor(self.grpc_started, self.grpc_handled,
                                        self.grpc_handling, served_methods())
        self._lock = threading.Lock()
        self._cursor = 0                     # RunStore.runs_changed cursor: runs seen so far
        self._open: dict[str, int] = {}      # runs not ended -> their events counted so far
        self._scan(baseline=True)

    def _scan(self, baseline: bool = False) -> None:
        """Count what the runs added since the last scan, and the runs not ended then, did
        meanwhile; runs that ended are never read again."""
        with self._lock:
            runs, self._cursor = self.manager.store.runs_changed(self._cursor, self._open)
            for r in runs:
                seen = self._open.get(r.id, 0)
                if r.progress.events > seen and not baseline:
                    self.events.inc(r.progress.events - seen)
                if not r.state.terminal:
                    self._open[r.id] = max(seen, r.progress.events)
                    continue
                self._open.pop(r.id, None)
                if (not baseline and r.start_time_ns is not None
                        and r.end_time_ns is not None):
                    self.wall.observe(max(0.0, (r.end_time_ns - r.start_time_ns) / 1e9))

    def collect(self):
        """A collector for the service registry: update from the store, then report."""
        try:
            self._scan()
        except Exception:   # a scrape must not take the server down
            log.exception("service metrics")
        yield from self.registry.collect()

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(self)

    def describe(self):
        return list(self.registry.collect())   # fixed names, without a store scan


# go-grpc-prometheus's handling-time buckets (prometheus.DefBuckets), seconds
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))
UNKNOWN = "unknown"


def served_methods() -> dict[str, tuple[str, str]]:
    """'/package.Service/Method' -> (service, method) of every method this server serves:
    the Simulator, grpc.health.v1 and server reflection."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    from compactsim.proto.v1 import simulator_pb2
    out = {}
    for fd in (simulator_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        for service in fd.services_by_name.values():
            for m in service.methods:
                out[f"/{service.full_name}/{m.name}"] = (service.full_name, m.name)
    return out


def _grpc_type(handler) -> str:
    return {(False, False): "unary", (False, True): "server_stream",
            (True, False): "client_stream", (True, True): "bidi_stream"}[
        (bool(handler.request_streaming), bool(handler.response_streaming))]


class _Interceptor(grpc.aio.ServerInterceptor):
    """go-grpc-prometheus's server metrics: `grpc_server_started_total`,
    `grpc_server_handled_total` (with grpc_code) and `grpc_server_handling_seconds`, by
    grpc_type, grpc_service and grpc_method. Only the methods in `methods` get their own
    label values; any other path (unimplemented, perhaps unauthenticated) counts as
    grpc_service="unknown", grpc_method="unknown", so callers cannot grow the label set."""

    def __init__(self, started: Counter, handled: Counter, handling: Histogram,
                 methods: dict[str, tuple[str, str]]):
        self.started = started
        self.handled = handled
        self.handling = handling
        self.methods = methods

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        service, method = self.methods.get(details.method, (UNKNOWN, UNKNOWN))
        if handler is None:
            labels = ("unary", service, method)
            self.started.labels(*labels).inc()
            self.handled.labels(*labels, grpc.StatusCode.UNIMPLEMENTED.name).inc()
            self.handling.labels(*labels).observe(0.0)
            return handler
        labels = (_grpc_type(handler), service, method)
        started, handled, handling = self.started, self.handled, self.handling

        def code_of(ctx, exc: BaseException | None) -> str:
            code = None
            with contextlib.suppress(Exception):   # no code set (or no call): guess below
                code = ctx.code()
            if isinstance(code, int):
                code = {c.value[0]: c for c in grpc.StatusCode}.get(code)
            if code is None:
                code = (grpc.StatusCode.OK if exc is None
                        else grpc.StatusCode.CANCELLED if type(exc).__name__ == "CancelledError"
                        else grpc.StatusCode.UNKNOWN)
            return code.name

        def done(t0: float, ctx, exc: BaseException | None) -> None:
            handling.labels(*labels).observe(time.perf_counter() - t0)
            handled.labels(*labels, code_of(ctx, exc)).inc()

        def unary(fn):
            async def wrapped(request, ctx):
                started.labels(*labels).inc()
                t0 = time.perf_counter()
                try:
                    result = await fn(request, ctx)
                except BaseException as exc:
                    done(t0, ctx, exc)
                    raise
                done(t0, ctx, None)
                return result
            return wrapped

        def streaming(fn):
            async def wrapped(request, ctx):
                started.labels(*labels).inc()
                t0 = time.perf_counter()
                try:
                    async for item in fn(request, ctx):
                        yield item
                except BaseException as exc:
                    done(t0, ctx, exc)
                    raise
                done(t0, ctx, None)
            return wrapped

        kinds = (("unary_unary", grpc.unary_unary_rpc_method_handler),
                 ("unary_stream", grpc.unary_stream_rpc_method_handler),
                 ("stream_unary", grpc.stream_unary_rpc_method_handler),
                 ("stream_stream", grpc.stream_stream_rpc_method_handler))
        for attr, make in kinds:
            fn = getattr(handler, attr)
            if fn is None:
                continue
            if inspect.isasyncgenfunction(fn):
                fn = streaming(fn)
            elif inspect.iscoroutinefunction(fn):
                fn = unary(fn)
            else:
                return handler   # a synchronous behaviour: not counted
            return make(fn, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
        return handler
