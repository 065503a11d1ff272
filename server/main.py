"""`compactsim-server`: the Simulator service on grpc.aio, with grpc.health.v1, server
reflection, the service's own Prometheus metrics and each running run as a Prometheus
target (`/sd`, `/probe`: server.exporter).

Every flag also comes from an environment variable (`--max-queue` <- COMPACTSIM_MAX_QUEUE).
On SIGTERM (or SIGINT): health NOT_SERVING, CreateRun refused with UNAVAILABLE, running runs
stopped and marked FAILED "interrupted" (re-runnable), watch streams ended, the store
flushed and closed, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from compactsim_proto.v1 import simulator_pb2_grpc
from server.executor import ProcessExecutor
from server.exporter import start_exporter
from server.manager import RunManager
from server.metrics import ServiceMetrics
from server.service import SERVICE_NAME, Simulator
from server.store import RunState, RunStore

log = logging.getLogger("compactsim.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_POLL_S = 1.0


class _Scenarios:
    """sim.scenarios behind the servicer's Scenarios protocol."""

    def list(self):
        from sim.scenarios import list_scenarios
        return list_scenarios()

    def load(self, name):
        from sim.scenarios import load_scenario
        return load_scenario(name)

    def description(self, name):
        from importlib import resources

        import yaml
        path = resources.files("sim.scenarios") / f"{name}.yaml"
        return yaml.safe_load(path.read_text())["description"].strip()


class _Collector:
    """compactsim_runs{state} and compactsim_queue_depth, read at scrape time."""

    def __init__(self, manager: RunManager):
        self.manager = manager

    def collect(self):
        counts = {s.value: 0 for s in RunState}
        token = ""
        try:
            while True:
                page, token = self.manager.store.list_runs("", "", 1000, token)
                for r in page:
                    counts[r.state.value] += 1
                if not token:
                    break
        except Exception:   # noqa: BLE001 - a scrape must not take the server down
            log.exception("metrics")
        runs = GaugeMetricFamily("compactsim_runs", "Runs (not deleted) by state",
                                 labels=["state"])
        for s, n in counts.items():
            runs.add_metric([s], n)
        yield runs
        yield GaugeMetricFamily("compactsim_queue_depth", "Runs waiting for a worker",
                                value=len(self.manager.queued()))
        yield GaugeMetricFamily("compactsim_running_runs", "Runs with a worker",
                                value=len(self.manager.running()))


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class App:
    server: grpc.aio.Server
    port: int
    service: Simulator
    manager: RunManager
    store: RunStore
    health: HealthServicer
    metrics_port: int | None = None
    _metrics: Any = None
    _watch: asyncio.Task | None = None
    _stopped: bool = field(default=False)

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    def _healthy(self) -> bool:
        try:
            self.store.schema_version   # a read: fails when the store is down
        except Exception:   # noqa: BLE001 - any store failure means NOT_SERVING
            return False
        return self.manager.healthy()

    async def _watch_health(self) -> None:
        last = None
        while not self.service.closing:
            ok = await asyncio.to_thread(self._healthy)
            if ok != last and not self.service.closing:
                await self._set_health(SERVING if ok else NOT_SERVING)
                last = ok
            await asyncio.sleep(HEALTH_POLL_S)

    async def start(self) -> None:
        await self.server.start()
        await self._set_health(SERVING if self._healthy() else NOT_SERVING)
        self._watch = asyncio.create_task(self._watch_health())

    async def stop(self, grace_s: float = 5.0) -> None:
        """The SIGTERM sequence."""
        if self._stopped:
            return
        self._stopped = True
        self.service.refuse_new_runs()
        await self._set_health(NOT_SERVING)
        if self._watch is not None:
            self._watch.cancel()
        await asyncio.to_thread(self.manager.shutdown)   # running runs stopped and marked
        self.service.end_watches()    # after the marks, so watchers see their runs end
        await self.server.stop(grace_s)
        await asyncio.to_thread(self.store.close)        # flushed
        if self._metrics is not None:
            self._metrics[0].shutdown()


def _executor(kind: str, workers: int, dask_scheduler: str | None):
    if kind == "process":
        return ProcessExecutor(workers)
    if kind == "dask":
        if not dask_scheduler:
            raise SystemExit("--executor dask needs --dask-scheduler ADDRESS")
        from server.dask_executor import DaskExecutor   # lazily: dask is heavy
        return DaskExecutor(dask_scheduler)
    raise SystemExit(f"unknown executor {kind!r} (process or dask)")


async def build_server(*, listen: str = "127.0.0.1:50051", data_dir: str | Path = ".",
                       workers: int | None = None, max_queue: int = 1000,
                       max_run_wall_time: float | None = None, executor: str = "process",
                       dask_scheduler: str | None = None,
                       metrics_listen: str | None = "127.0.0.1:9464") -> App:
    """The whole server, bound but not started (call `await app.start()`)."""
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    store = RunStore(data / "compactsim.db")
    ex = _executor(executor, workers or os.cpu_count() or 1, dask_scheduler)
    manager = RunManager(store, ex, max_queue=max_queue,
                         max_run_wall_time_s=max_run_wall_time or None)
    for r in manager.recovered:
        log.warning("run %s was cut off by a restart; marked FAILED (interrupted)", r.id)
    service = Simulator(manager, _Scenarios(), executor_name=executor)
    svc_metrics = ServiceMetrics(manager)
    server = grpc.aio.server(interceptors=[svc_metrics.interceptor])
    simulator_pb2_grpc.add_SimulatorServicer_to_server(service, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise SystemExit(f"cannot listen on {listen}")
    app = App(server, port, service, manager, store, health)
    if metrics_listen:
        registry = CollectorRegistry()
        registry.register(_Collector(manager))
        svc_metrics.register(registry)
        host, mport = _split(metrics_listen)
        app._metrics = start_exporter(manager, registry, host, mport)   # + /sd, /probe
        app.metrics_port = app._metrics[0].server_port
    return app


def _env(name: str, default: Any) -> Any:
    return os.environ.get(f"COMPACTSIM_{name}", default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="compactsim-server", description=__doc__.splitlines()[0])
    p.add_argument("--listen", default=_env("LISTEN", "127.0.0.1:50051"),
                   help="gRPC address, host:port (port 0: any) [COMPACTSIM_LISTEN]")
    p.add_argument("--metrics-listen", default=_env("METRICS_LISTEN", "127.0.0.1:9464"),
                   help="Prometheus metrics address; empty: off [COMPACTSIM_METRICS_LISTEN]")
    p.add_argument("--data-dir", default=_env("DATA_DIR", "."),
                   help="directory of the SQLite store [COMPACTSIM_DATA_DIR]")
    p.add_argument("--workers", type=int, default=int(_env("WORKERS", os.cpu_count() or 1)),
                   help="runs at a time [COMPACTSIM_WORKERS]")
    p.add_argument("--max-queue", type=int, default=int(_env("MAX_QUEUE", 1000)),
                   help="runs that may wait [COMPACTSIM_MAX_QUEUE]")
    p.add_argument("--max-run-wall-time", type=float,
                   default=float(_env("MAX_RUN_WALL_TIME", 0)) or None,
                   help="seconds a run may take; 0: no limit [COMPACTSIM_MAX_RUN_WALL_TIME]")
    p.add_argument("--executor", choices=("process", "dask"),
                   default=_env("EXECUTOR", "process"), help="[COMPACTSIM_EXECUTOR]")
    p.add_argument("--dask-scheduler", default=_env("DASK_SCHEDULER", None),
                   help="Dask scheduler address [COMPACTSIM_DASK_SCHEDULER]")
    p.add_argument("--port-file", default=_env("PORT_FILE", None),
                   help="write the bound gRPC port here once serving (the metrics port to "
                        "PATH.metrics) [COMPACTSIM_PORT_FILE]")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    app = await build_server(listen=args.listen, data_dir=args.data_dir, workers=args.workers,
                             max_queue=args.max_queue,
                             max_run_wall_time=args.max_run_wall_time,
                             executor=args.executor, dask_scheduler=args.dask_scheduler,
                             metrics_listen=args.metrics_listen or None)
    await app.start()
    log.info("serving on port %d (metrics: %s)", app.port, app.metrics_port)
    if args.port_file:
        if app.metrics_port is not None:
            Path(args.port_file + ".metrics").write_text(str(app.metrics_port))
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(app.port))
        tmp.replace(args.port_file)   # atomic: a reader never sees a partial number
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await app.stop()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()
