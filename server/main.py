"""`compactsim-server`: the Simulator service on grpc.aio, with grpc.health.v1, server
reflection, the service's own Prometheus metrics and each running run as a Prometheus
target (`/sd`, `/probe`: server.exporter).

Every flag also comes from an environment variable (`--max-queue` <- COMPACTSIM_MAX_QUEUE).

Shared use (server.auth): with `--token-file` every call but health needs a bearer token
that the file names, and SIGHUP reads the file again. Without one, every caller is
`anonymous` and the server binds to loopback only, whatever `--listen` says, unless
`--insecure-allow-remote` is given; it says which at start-up. `--tls-cert`/`--tls-key`
serve TLS on the gRPC listener and on the metrics listener. The metrics listener follows
the same policy (server.metrics_listener): with a token file it needs a bearer token of
it (or a client certificate signed by `--metrics-client-ca`), without one it stays on
loopback unless allowed. Tokens over plain text on a listener others can reach are
warned about at start-up.

Quotas and limits (server.limits): per-user queued and running runs, simulated memory and
duration per run, the server memory a run's worker may need, the size of a request
message and of an uploaded trace. Without a token file there is one user, `anonymous`, so
the per-user limits are off unless given. Uploaded traces live in DATA_DIR/traces.
On SIGTERM (or SIGINT): health NOT_SERVING, CreateRun refused with UNAVAILABLE, running runs
stopped and marked FAILED "interrupted" (re-runnable), watch streams ended, the store
flushed and closed, exit 0.
"""

from __future__ import annotations

# ruff: noqa: E402 - the stop signals are handled before the slow imports
from compactsim.server.signals import SIGNALS, StopSignal

# SIGTERM/SIGINT from the first moment (server.signals), before the slow imports below.
_EARLY_STOP = StopSignal.install() if __name__ == "__main__" else None

import argparse
import asyncio
import dataclasses
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

from compactsim.codec.runstate import RunState
from compactsim.proto.v1 import simulator_pb2_grpc
from compactsim.server.auth import Authenticator, TokenFileError, Tokens
from compactsim.server.decoding import DecodingInterceptor
from compactsim.server.executor import ProcessExecutor
from compactsim.server.exporter import start_exporter
from compactsim.server.limits import Limits
from compactsim.server.manager import RunManager
from compactsim.server.metrics import ServiceMetrics
from compactsim.server.metrics_listener import tls_context
from compactsim.server.service import SERVICE_NAME, Simulator
from compactsim.server.store import RunStore
from compactsim.server.traces import TraceStore

log = logging.getLogger("compactsim.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_POLL_S = 1.0
# A run's wall time unless told: long enough for a day simulated at full detail, short
# enough that a forgotten or hostile run frees its worker the same day.
DEFAULT_MAX_RUN_WALL_TIME = "12h"
# An UploadTrace message carries up to 1 MiB: the request size limit must leave room.
MIN_REQUEST_BYTES = 2 << 20


class _Scenarios:
    """sim.scenarios behind the servicer's Scenarios protocol."""

    def list(self):
        from compactsim.sim.scenarios import list_scenarios
        return list_scenarios()

    def load(self, name):
        from compactsim.sim.scenarios import load_scenario
        return load_scenario(name)

    def description(self, name):
        from importlib import resources

        import yaml
        path = resources.files("compactsim.sim.scenarios") / f"{name}.yaml"
        return yaml.safe_load(path.read_text())["description"].strip()


class _Collector:
    """compactsim_runs{state} and compactsim_queue_depth, read at scrape time."""

    def __init__(self, manager: RunManager):
        self.manager = manager

    def collect(self):
        counts = dict.fromkeys(RunState, 0)
        try:
            counts = self.manager.store.count_by_state()   # one GROUP BY query
        except Exception:   # noqa: BLE001 - a scrape must not take the server down
            log.exception("metrics")
        runs = GaugeMetricFamily("compactsim_runs", "Runs (not deleted) by state",
                                 labels=["state"])
        for s, n in counts.items():
            runs.add_metric([s.value], n)
        yield runs
        yield GaugeMetricFamily("compactsim_queue_depth", "Runs waiting for a worker",
                                value=len(self.manager.queued()))
        yield GaugeMetricFamily("compactsim_running_runs", "Runs with a worker",
                                value=len(self.manager.running()))


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _loopback_only(address: str, allow_remote: bool, what: str) -> str:
    """`address`, or its port on 127.0.0.1 when no token file guards a remote listener."""
    host, port = _split(address)
    if host in LOOPBACK or allow_remote:
        if host not in LOOPBACK:
            log.warning("%s on %s without a token file (--insecure-allow-remote): anyone who "
                        "reaches it acts as 'anonymous'", what, address)
        return address
    log.warning("no --token-file: %s listens on loopback only (127.0.0.1:%d, not %s); give "
                "--token-file, or --insecure-allow-remote to listen on %s anyway",
                what, port, address, host)
    return f"127.0.0.1:{port}"


def _plaintext_tokens_warning(address: str, what: str) -> None:
    """Tokens over plain text are readable by anyone on the path: say so for a listener
    others can reach."""
    if _split(address)[0] not in LOOPBACK:
        log.warning("%s on %s takes bearer tokens over plain text: anyone on the network "
                    "path can read them; give --tls-cert/--tls-key", what, address)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"cannot read {what} {path}: {exc.strerror}") from None


@dataclass
class App:
    server: grpc.aio.Server
    port: int
    service: Simulator
    manager: RunManager
    store: RunStore
    health: HealthServicer
    auth: Authenticator = field(default_factory=Authenticator)
    metrics_port: int | None = None
    _metrics: Any = None
    _watch: asyncio.Task | None = None
    _stopped: bool = field(default=False)

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    def _healthy(self) -> bool:
        try:
            _ = self.store.schema_version   # a read: fails when the store is down
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

    def reload_tokens(self) -> None:
        """SIGHUP: read the token file again; a bad file leaves the tokens in force."""
        if self.auth.tokens is None:
            log.warning("SIGHUP: no --token-file to reload")
            return
        try:
            n = self.auth.tokens.reload()
        except TokenFileError as exc:
            log.error("SIGHUP: token file not reloaded, the old tokens stay: %s", exc)
            return
        log.info("SIGHUP: %d tokens loaded from %s", n, self.auth.tokens.path)

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
        from compactsim.server.dask_executor import DaskExecutor  # lazily: dask is heavy
        return DaskExecutor(dask_scheduler)
    raise SystemExit(f"unknown executor {kind!r} (process or dask)")


async def build_server(*, listen: str = "127.0.0.1:50051", data_dir: str | Path = ".",
                       workers: int | None = None, max_queue: int = 1000,
                       max_run_wall_time: float | None = None, executor: str = "process",
                       dask_scheduler: str | None = None,
                       metrics_listen: str | None = "127.0.0.1:9464",
                       token_file: str | None = None, tls_cert: str | None = None,
                       tls_key: str | None = None, insecure_allow_remote: bool = False,
                       metrics_client_ca: str | None = None,
                       limits: Limits | None = None, target_linger_s: float = 30.0) -> App:
    """The whole server, bound but not started (call `await app.start()`)."""
    limits = dataclasses.replace(limits or Limits(),
                                 max_run_wall_time_s=max_run_wall_time or None)
    if limits.max_request_bytes < MIN_REQUEST_BYTES:
        raise SystemExit(f"--max-request-bytes must be at least {MIN_REQUEST_BYTES} (an "
                         f"UploadTrace message carries up to 1 MiB)")
    if (tls_cert is None) != (tls_key is None):
        raise SystemExit("--tls-cert and --tls-key go together")
    try:
        auth = Authenticator(Tokens(token_file) if token_file else None)
    except TokenFileError as exc:
        raise SystemExit(f"--token-file: {exc}") from None
    if metrics_client_ca and tls_cert is None:
        raise SystemExit("--metrics-client-ca needs --tls-cert and --tls-key (client "
                         "certificates are a part of TLS)")
    if not auth.required:
        listen = _loopback_only(listen, insecure_allow_remote, "gRPC")
        if metrics_listen and not metrics_client_ca:
            metrics_listen = _loopback_only(metrics_listen, insecure_allow_remote, "metrics")
    elif tls_cert is None:
        _plaintext_tokens_warning(listen, "gRPC")
        if metrics_listen:
            _plaintext_tokens_warning(metrics_listen, "metrics")
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    store = RunStore(data / "compactsim.db")
    traces = TraceStore(data, limits.max_trace_bytes, limits.max_trace_bytes_per_user)
    ex = _executor(executor, workers or os.cpu_count() or 1, dask_scheduler)
    manager = RunManager(store, ex, max_queue=max_queue,
                         max_run_wall_time_s=max_run_wall_time or None,
                         max_queued_per_user=limits.max_queued_per_user,
                         max_running_per_user=limits.max_running_per_user,
                         worker_spec=traces.worker_spec, target_linger_s=target_linger_s)
    for r in manager.recovered:
        log.warning("run %s was cut off by a restart; marked FAILED (interrupted)", r.id)
    service = Simulator(manager, _Scenarios(), traces, executor_name=executor, auth=auth,
                        limits=limits)
    svc_metrics = ServiceMetrics(manager)
    server = grpc.aio.server(interceptors=[svc_metrics.interceptor, auth.interceptor(),
                                           DecodingInterceptor()],
                             options=[("grpc.max_receive_message_length",
                                       limits.max_request_bytes)])
    simulator_pb2_grpc.add_SimulatorServicer_to_server(service, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    if tls_cert is not None and tls_key is not None:    # both or neither (checked above)
        creds = grpc.ssl_server_credentials([(_read(tls_key, "--tls-key"),
                                              _read(tls_cert, "--tls-cert"))])
        port = server.add_secure_port(listen, creds)
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise SystemExit(f"cannot listen on {listen}")
    app = App(server, port, service, manager, store, health, auth)
    if metrics_listen:
        registry = CollectorRegistry()
        registry.register(_Collector(manager))
        svc_metrics.register(registry)
        host, mport = _split(metrics_listen)
        lookup = None                                    # open: loopback (or allowed)
        if auth.tokens is not None:                      # auth.required
            lookup = auth.tokens.lookup                  # the tokens in force (SIGHUP)
        elif metrics_client_ca:
            lookup = lambda token: None                  # noqa: E731 - certificates only
        app._metrics = start_exporter(   # + /sd, /probe
            manager, registry, host, mport,
            tls_context(tls_cert, tls_key, metrics_client_ca) if tls_cert and tls_key else None,
            lookup)
        app.metrics_port = app._metrics[0].server_port
    return app


def _env(name: str, default: Any) -> Any:
    return os.environ.get(f"COMPACTSIM_{name}", default)


def _size(text: str) -> int:
    """A flag's size: bytes, or a number with a binary unit (512MiB, 256GiB)."""
    from compactsim.sim.units import parse_size
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    """A flag's duration: seconds, or a number with a unit (90s, 12h)."""
    from compactsim.sim.units import parse_duration
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 (no limit) or more")
    return value


def _per_user(given: int | None, lab_default: int, token_file: str | None) -> int | None:
    """A per-user limit: as given (0: none); unset, `lab_default` with a token file and
    none without one (there is one user, and the global limits apply)."""
    if given is None:
        return lab_default if token_file else None
    return given or None


def limits_from_args(args: argparse.Namespace) -> Limits:
    workers = args.workers or os.cpu_count() or 1
    try:
        return Limits(
            max_queued_per_user=_per_user(args.max_queued_per_user,
                                          max(1, args.max_queue // 2), args.token_file),
            max_running_per_user=_per_user(args.max_running_per_user, max(1, workers // 2),
                                           args.token_file),
            max_run_memory_bytes=args.max_run_memory,
            max_run_duration_s=args.max_run_duration,
            max_run_resident_bytes=args.max_run_resident,
            max_request_bytes=args.max_request_bytes, max_trace_bytes=args.max_trace_bytes,
            max_run_samples=args.max_run_samples, max_run_trace_lines=args.max_run_trace_lines,
            trace_idle_timeout_s=args.trace_idle_timeout,
            max_trace_bytes_per_user=args.max_trace_bytes_per_user)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="compactsim-server", description=__doc__.splitlines()[0])
    p.add_argument("--listen", default=_env("LISTEN", "127.0.0.1:50051"),
                   help="gRPC address, host:port (port 0: any) [COMPACTSIM_LISTEN]")
    p.add_argument("--metrics-listen", default=_env("METRICS_LISTEN", "127.0.0.1:9464"),
                   help="Prometheus metrics address; empty: off [COMPACTSIM_METRICS_LISTEN]")
    p.add_argument("--metrics-target-linger", type=_duration,
                   default=_env("METRICS_TARGET_LINGER", "30s"),
                   help="how long a finished run stays a target of /sd and /probe, serving "
                        "its final state (default 30s: a few scrape and discovery "
                        "intervals) [COMPACTSIM_METRICS_TARGET_LINGER]")
    p.add_argument("--data-dir", default=_env("DATA_DIR", "."),
                   help="directory of the SQLite store [COMPACTSIM_DATA_DIR]")
    p.add_argument("--workers", type=int, default=int(_env("WORKERS", os.cpu_count() or 1)),
                   help="runs at a time [COMPACTSIM_WORKERS]")
    p.add_argument("--max-queue", type=int, default=int(_env("MAX_QUEUE", 1000)),
                   help="runs that may wait [COMPACTSIM_MAX_QUEUE]")
    p.add_argument("--max-run-wall-time", type=_duration,
                   default=_env("MAX_RUN_WALL_TIME", DEFAULT_MAX_RUN_WALL_TIME),
                   help="wall time a run may take, then it is stopped and FAILED; a paced "
                        "spec that would take longer is refused; 0: no limit (default "
                        f"{DEFAULT_MAX_RUN_WALL_TIME}) [COMPACTSIM_MAX_RUN_WALL_TIME]")
    p.add_argument("--executor", choices=("process", "dask"),
                   default=_env("EXECUTOR", "process"), help="[COMPACTSIM_EXECUTOR]")
    p.add_argument("--dask-scheduler", default=_env("DASK_SCHEDULER", None),
                   help="Dask scheduler address [COMPACTSIM_DASK_SCHEDULER]")
    p.add_argument("--port-file", default=_env("PORT_FILE", None),
                   help="write the bound gRPC port here once serving (the metrics port to "
                        "PATH.metrics) [COMPACTSIM_PORT_FILE]")
    p.add_argument("--token-file", default=_env("TOKEN_FILE", None),
                   help="bearer tokens, 'TOKEN USER [ROLE]' a line; reloaded on SIGHUP "
                        "[COMPACTSIM_TOKEN_FILE]")
    p.add_argument("--insecure-allow-remote", action="store_true",
                   default=_env("INSECURE_ALLOW_REMOTE", "") not in ("", "0", "false"),
                   help="without --token-file, listen on --listen anyway instead of on "
                        "loopback only [COMPACTSIM_INSECURE_ALLOW_REMOTE]")
    p.add_argument("--tls-cert", default=_env("TLS_CERT", None),
                   help="PEM certificate (chain): TLS on the gRPC and metrics listeners "
                        "[COMPACTSIM_TLS_CERT]")
    p.add_argument("--tls-key", default=_env("TLS_KEY", None),
                   help="PEM private key of --tls-cert [COMPACTSIM_TLS_KEY]")
    p.add_argument("--metrics-client-ca", default=_env("METRICS_CLIENT_CA", None),
                   help="PEM CA: the metrics listener also admits TLS client certificates "
                        "it signed (Prometheus tls_config cert_file/key_file); with a token "
                        "file, a bearer token of it admits too [COMPACTSIM_METRICS_CLIENT_CA]")
    q = p.add_argument_group(
        "quotas and limits", "refusals are RESOURCE_EXHAUSTED with a QuotaFailure (and a "
        "RetryInfo for the queue limits); sizes take binary units (512MiB), durations units "
        "(90s, 12h)")
    q.add_argument("--max-queued-per-user", type=_count,
                   default=_env("MAX_QUEUED_PER_USER", None),
                   help="runs one user may have waiting; 0: no limit; default half of "
                        "--max-queue with --token-file, no limit without "
                        "[COMPACTSIM_MAX_QUEUED_PER_USER]")
    q.add_argument("--max-running-per-user", type=_count,
                   default=_env("MAX_RUNNING_PER_USER", None),
                   help="runs of one user running at a time (the others stay queued while "
                        "other users' runs start); 0: no limit; default half of --workers "
                        "(at least 1) with --token-file, no limit without "
                        "[COMPACTSIM_MAX_RUNNING_PER_USER]")
    q.add_argument("--max-run-memory", type=_size, default=_env("MAX_RUN_MEMORY", "256GiB"),
                   help="simulated memory per run, machine.memory_bytes x nodes "
                        "(default 256GiB) [COMPACTSIM_MAX_RUN_MEMORY]")
    q.add_argument("--max-run-duration", type=_duration,
                   default=_env("MAX_RUN_DURATION", "24h"),
                   help="simulated time per run (default 24h) [COMPACTSIM_MAX_RUN_DURATION]")
    q.add_argument("--max-run-resident", type=_size, default=_env("MAX_RUN_RESIDENT", "2GiB"),
                   help="server memory a run's worker may need, estimated from the spec "
                        "(80 MiB + 17 B per simulated 4 KiB page + 5 B per replayed trace "
                        "byte + 4800 B per series row + 600 B per trace line kept; default "
                        "2GiB) [COMPACTSIM_MAX_RUN_RESIDENT]")
    q.add_argument("--max-run-samples", type=_count,
                   default=int(_env("MAX_RUN_SAMPLES", 200_000)),
                   help="series rows per run, duration / sampling interval (default 200000) "
                        "[COMPACTSIM_MAX_RUN_SAMPLES]")
    q.add_argument("--max-run-trace-lines", type=_count,
                   default=int(_env("MAX_RUN_TRACE_LINES", 1_000_000)),
                   help="trace lines a run may keep, its sampling.trace_buffer (default "
                        "1000000) [COMPACTSIM_MAX_RUN_TRACE_LINES]")
    q.add_argument("--max-request-bytes", type=_size,
                   default=_env("MAX_REQUEST_BYTES", "4MiB"),
                   help="largest request message, at least 2MiB (default 4MiB) "
                        "[COMPACTSIM_MAX_REQUEST_BYTES]")
    q.add_argument("--max-trace-bytes", type=_size, default=_env("MAX_TRACE_BYTES", "256MiB"),
                   help="largest uploaded trace (default 256MiB) [COMPACTSIM_MAX_TRACE_BYTES]")
    q.add_argument("--max-trace-bytes-per-user", type=_size,
                   default=_env("MAX_TRACE_BYTES_PER_USER", "1GiB"),
                   help="uploaded traces one user may keep, each counted once (default "
                        "1GiB; DeleteTrace frees) [COMPACTSIM_MAX_TRACE_BYTES_PER_USER]")
    q.add_argument("--trace-idle-timeout", type=_duration,
                   default=_env("TRACE_IDLE_TIMEOUT", "60s"),
                   help="an upload that sends no chunk for this long is dropped (default "
                        "60s) [COMPACTSIM_TRACE_IDLE_TIMEOUT]")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


async def serve(args: argparse.Namespace, stop_signal: StopSignal | None = None) -> int:
    """Build and run the server until SIGTERM or SIGINT (from `stop_signal`, installed
    when the process started; a signal that came early stops it as soon as it is built)."""
    stop_signal = stop_signal or StopSignal.install()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stop_signal.wake_on(lambda: loop.call_soon_threadsafe(stop.set))
    try:
        if stop_signal.received is not None:
            log.info("stopped before start (signal %d)", stop_signal.received)
            return 0
        app = await build_server(listen=args.listen, data_dir=args.data_dir,
                                 workers=args.workers, max_queue=args.max_queue,
                                 max_run_wall_time=args.max_run_wall_time,
                                 executor=args.executor, dask_scheduler=args.dask_scheduler,
                                 metrics_listen=args.metrics_listen or None,
                                 token_file=args.token_file, tls_cert=args.tls_cert,
                                 tls_key=args.tls_key,
                                 insecure_allow_remote=args.insecure_allow_remote,
                                 metrics_client_ca=args.metrics_client_ca,
                                 limits=limits_from_args(args),
                                 target_linger_s=args.metrics_target_linger)
        try:
            await app.start()
            loop.add_signal_handler(signal.SIGHUP, app.reload_tokens)
            if not stop.is_set():
                log.info("serving on port %d (metrics: %s; %s; %s)", app.port,
                         app.metrics_port, "TLS" if args.tls_cert else "plaintext",
                         f"tokens from {args.token_file}" if args.token_file
                         else "no authentication")
                _write_port_file(args.port_file, app)
                await stop.wait()
            log.info("shutting down")
        finally:
            await app.stop()
        log.info("stopped")
        return 0
    finally:
        stop_signal.wake_on(None)


def _write_port_file(path: str | None, app: App) -> None:
    if not path:
        return
    if app.metrics_port is not None:
        Path(path + ".metrics").write_text(str(app.metrics_port))
    tmp = Path(path + ".tmp")
    tmp.write_text(str(app.port))
    tmp.replace(path)   # atomic: a reader never sees a partial number


def main(argv: list[str] | None = None, stop_signal: StopSignal | None = None) -> None:
    stop_signal = stop_signal or _EARLY_STOP or StopSignal.install()
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rc = asyncio.run(serve(args, stop_signal))
    # The server has stopped. The interpreter's finalization puts the default action back
    # on every signal with a Python handler, so a second SIGTERM during the shutdown
    # (grpc's teardown takes a while) would kill the process by the signal; ignored
    # signals are left alone.
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(rc)


if __name__ == "__main__":
    main()
