"""The service's own metrics beyond runs-by-state and queue depth (server.main._Collector):

- `compactsim_run_wall_seconds` (histogram): wall time of each run that ended (end - start),
- `compactsim_simulated_events_total` (counter): SimPy events processed by all runs,
- `compactsim_grpc_requests_total{method,code}` (counter): gRPC calls, by full method name
  and status code (a grpc.aio server interceptor).

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
        self.grpc_requests = Counter("compactsim_grpc_requests",
                                     "gRPC requests handled, by method and status code",
                                     ["method", "code"], registry=self.registry)
        self.interceptor = _Interceptor(self.grpc_requests)
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


class _Interceptor(grpc.aio.ServerInterceptor):
    """Counts every call by method and final status code."""

    def __init__(self, counter: Counter):
        self.counter = counter

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            self.counter.labels(details.method, grpc.StatusCode.UNIMPLEMENTED.name).inc()
            return handler
        method = details.method
        count = self.counter

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

        def unary(fn):
            async def wrapped(request, ctx):
                try:
                    result = await fn(request, ctx)
                except BaseException as exc:
                    count.labels(method, code_of(ctx, exc)).inc()
                    raise
                count.labels(method, code_of(ctx, None)).inc()
                return result
            return wrapped

        def streaming(fn):
            async def wrapped(request, ctx):
                try:
                    async for item in fn(request, ctx):
                        yield item
                except BaseException as exc:
                    count.labels(method, code_of(ctx, exc)).inc()
                    raise
                count.labels(method, code_of(ctx, None)).inc()
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
