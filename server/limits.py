"""Quotas and limits of a shared server: what one run, one request and one user may take.

The numbers are server flags (server/main.py); this module does the arithmetic only. Each
check returns the limits a request exceeds as `Exceeded` (the QuotaFailure subject,
"user:{user}" or "server", a description naming the limit, the field and the numbers, and
whether waiting helps), and the servicer answers RESOURCE_EXHAUSTED with a
google.rpc.QuotaFailure, plus a RetryInfo when waiting helps (queue limits: a run that
starts frees a place; a spec that is too large stays too large).

The server memory a run's worker needs (`resident_estimate`) is a fixed part plus a part
per simulated page plus a part per byte of replayed trace. Measured as the peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) of a worker started as the server starts them
(forkserver with `server.worker`, `sim.run` and `sim.config` preloaded, from a main module
that imports `server.main`, as the forkserver re-imports the server's) running
`server.worker.execute` on one anon group, CPython 3.11 on x86-64:

    simulated memory  workload                     peak RSS
    1 GiB             0.2 s, 100 req/s             63 300 KiB
    4 GiB             0.2 s, 100 req/s             76 568 KiB
    16 GiB            0.2 s, 100 req/s            128 764 KiB
    1 GiB             30 s, 20 000 req/s           66 384 KiB
    16 GiB            30 s, 20 000 req/s          130 448 KiB

so 17.0 bytes per 4 KiB page (15 of them the memmap, sim/page.py; the rest pageblock and
zone arrays) and 58-61 MiB fixed (53 MiB of it the interpreter with the server's and the
simulator's modules). From a fresh installation, whose modules are compiled as they are
first imported (no bytecode cached yet, as under PYTHONDONTWRITEBYTECODE), the fixed part
is 69 MiB (73 450 / 88 220 / 140 472 KiB at 1 / 4 / 16 GiB); the estimate takes 80 MiB.
Replaying an ftrace text of 100 000 and 400 000 alloc/free pairs (24.9 MB and 99.5 MB) on
1 GiB peaked 115 and 441 MiB above the same worker with a 2 KB trace: 4.8 and 4.6 bytes
per trace byte (the parsed events), rounded up to 5.

What a run records grows with it too. A run of 40 s sampled every 1 ms (40 002 rows of 37
columns) peaked 180 MiB above the same run sampled every 1 s, with the result message
pickled: 4.7 KB per sample row (the rows as dicts, then pickled), taken as 4 800 B. A run
keeping 187 414 trace lines (mm_page_alloc and mm_page_free, 26.6 MB of text) peaked 101
MiB above one keeping none: 565 B per line, taken as 600 B; the estimate counts the whole
ring buffer (`sampling.trace_buffer`) when any trace event is enabled. The server holds
about as much again while it stores the result, in pieces (server.manager).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PAGE_SIZE = 4096
RESIDENT_FIXED_BYTES = 80 << 20
RESIDENT_BYTES_PER_PAGE = 17
RESIDENT_BYTES_PER_TRACE_BYTE = 5
RESIDENT_BYTES_PER_SAMPLE = 4800
RESIDENT_BYTES_PER_TRACE_LINE = 600

# Bounds on repeated fields of a request that are not spec fields (the spec's own lists
# are bounded by sim.config: INVALID_ARGUMENT), besides the message size limit.
MAX_LABELS = 64
MAX_SWEEP_PARAMETERS = 16
MAX_SWEEP_VALUES = 1000
MAX_SWEEP_METRICS = 100

SERVER = "server"


@dataclass(frozen=True)
class Exceeded:
    """One limit a request exceeds: QuotaFailure subject and description, and whether
    trying again later can succeed."""

    subject: str
    description: str
    retry: bool = False


def user_subject(user: str) -> str:
    return f"user:{user}"


def format_bytes(n: float) -> str:
    """1536 -> "1.5 KiB", 256 << 30 -> "256 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def resident_estimate(memory_bytes: int, trace_bytes: int = 0, samples: int = 0,
                      trace_lines: int = 0) -> int:
    """Bytes of server memory a worker needs to simulate `memory_bytes` of RAM (all nodes)
    replaying `trace_bytes` of traces, recording `samples` series rows and keeping
    `trace_lines` trace lines (module docstring: where the figures come from)."""
    pages = memory_bytes // PAGE_SIZE
    return (RESIDENT_FIXED_BYTES + RESIDENT_BYTES_PER_PAGE * pages
            + RESIDENT_BYTES_PER_TRACE_BYTE * trace_bytes
            + RESIDENT_BYTES_PER_SAMPLE * samples
            + RESIDENT_BYTES_PER_TRACE_LINE * trace_lines)


def samples_of(duration_s: float, interval_s: float) -> int:
    """Series rows a run records: one at 0 and one every interval up to the end (0 when
    the interval is not known)."""
    return int(duration_s / interval_s) + 1 if interval_s > 0 else 0


def queue_exceeded(user: str, adding: int, queued: int, max_queue: int, queued_by_user: int,
                   max_queued_per_user: int | None) -> list[Exceeded]:
    """What queueing `adding` more runs of `user` exceeds, with `queued` runs waiting of
    which `queued_by_user` are the user's (None: no per-user limit)."""
    out = []
    if queued + adding > max_queue:
        out.append(Exceeded(SERVER, f"run queue: {queued} runs waiting + {adding} new > "
                                    f"{max_queue}, the most that may wait (--max-queue)",
                            retry=True))
    if max_queued_per_user is not None and queued_by_user + adding > max_queued_per_user:
        out.append(Exceeded(user_subject(user),
                            f"queued runs per user: {user!r} has {queued_by_user} waiting "
                            f"+ {adding} new > {max_queued_per_user} "
                            f"(--max-queued-per-user)", retry=True))
    return out


def _count(field: str, n: int, limit: int, what: str) -> list[Exceeded]:
    if n <= limit:
        return []
    return [Exceeded(SERVER, f"{field}: {n} {what}; at most {limit} per request")]


def repeated_exceeded(counts: Iterable[tuple[str, int, int, str]]) -> list[Exceeded]:
    """(field path, count, limit, what) of repeated fields -> those over their limit."""
    return [e for field, n, limit, what in counts for e in _count(field, n, limit, what)]


@dataclass(frozen=True)
class Limits:
    """Per-run and per-user limits of the server (flags of server/main.py). None: no
    per-user limit."""

    max_queued_per_user: int | None = None
    max_running_per_user: int | None = None
    max_run_memory_bytes: int = 256 << 30
    max_run_duration_s: float = 86400.0
    max_run_resident_bytes: int = 2 << 30
    max_request_bytes: int = 4 << 20
    max_trace_bytes: int = 256 << 20
    max_run_wall_time_s: float | None = None
    max_run_samples: int = 200_000
    trace_idle_timeout_s: float = 60.0
    max_trace_bytes_per_user: int = 1 << 30
    max_run_trace_lines: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("max_queued_per_user", "max_running_per_user"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (None: no limit), got {value}")
        for name in ("max_run_memory_bytes", "max_run_duration_s", "max_run_resident_bytes",
                     "max_request_bytes", "max_trace_bytes", "max_run_samples",
                     "max_run_trace_lines", "trace_idle_timeout_s",
                     "max_trace_bytes_per_user"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be above 0, got {getattr(self, name)}")

    def run_exceeded(self, prefix: str, nodes: int, memory_bytes_per_node: int,
                     duration_s: float, trace_bytes: int = 0, pace: float = 0.0,
                     interval_s: float = 0.0, trace_lines: int = 0) -> list[Exceeded]:
        """What one run of an effective spec exceeds; `prefix` is the spec's field path in
        the request ("run.spec"). `interval_s` is its sampling interval, `trace_lines` the
        trace lines it may keep (its trace buffer, 0 without trace events)."""
        out = []
        samples = samples_of(duration_s, interval_s)
        if samples > self.max_run_samples:
            out.append(Exceeded(SERVER, (
                f"{prefix}.sampling.interval_seconds: {duration_s:g} s sampled every "
                f"{interval_s:g} s = {samples} series rows > {self.max_run_samples}, the most "
                f"per run (--max-run-samples); sample less often or shorten the run")))
        if trace_lines > self.max_run_trace_lines:
            out.append(Exceeded(SERVER, (
                f"{prefix}.sampling.trace_buffer: {trace_lines} trace lines > "
                f"{self.max_run_trace_lines}, the most per run (--max-run-trace-lines)")))
        if pace > 0 and self.max_run_wall_time_s and duration_s / pace > self.max_run_wall_time_s:
            out.append(Exceeded(SERVER, (
                f"{prefix}.pace: {duration_s:g} s at pace {pace:g} takes {duration_s / pace:g} s "
                f"of wall time > {self.max_run_wall_time_s:g} s, the most per run "
                f"(--max-run-wall-time); raise the pace or shorten the run")))
        total = nodes * memory_bytes_per_node
        if total > self.max_run_memory_bytes:
            out.append(Exceeded(SERVER, (
                f"{prefix}.machine.memory_bytes: {nodes} node(s) x "
                f"{format_bytes(memory_bytes_per_node)} = {format_bytes(total)} of simulated "
                f"memory > {format_bytes(self.max_run_memory_bytes)}, the most per run "
                f"(--max-run-memory)")))
        if duration_s > self.max_run_duration_s:
            out.append(Exceeded(SERVER, (
                f"{prefix}.duration_seconds: {duration_s:g} s of simulated time > "
                f"{self.max_run_duration_s:g} s, the most per run (--max-run-duration)")))
        need = resident_estimate(total, trace_bytes, samples, trace_lines)
        if need > self.max_run_resident_bytes:
            trace = (f" + {RESIDENT_BYTES_PER_TRACE_BYTE} B x {trace_bytes} trace bytes"
                     if trace_bytes else "")
            if samples:
                trace += f" + {RESIDENT_BYTES_PER_SAMPLE} B x {samples} samples"
            if trace_lines:
                trace += f" + {RESIDENT_BYTES_PER_TRACE_LINE} B x {trace_lines} trace lines"
            out.append(Exceeded(SERVER, (
                f"{prefix}: its worker would need about {format_bytes(need)} of server "
                f"memory > {format_bytes(self.max_run_resident_bytes)} (--max-run-resident): "
                f"{format_bytes(RESIDENT_FIXED_BYTES)} + {RESIDENT_BYTES_PER_PAGE} B x "
                f"{total // PAGE_SIZE} pages{trace}")))
        return out

    def trace_exceeded(self, size: int) -> list[Exceeded]:
        """An upload of (at least) `size` bytes against --max-trace-bytes."""
        if size <= self.max_trace_bytes:
            return []
        return [Exceeded(SERVER, f"trace upload: more than {format_bytes(self.max_trace_bytes)}"
                                 f" ({self.max_trace_bytes} bytes), the most per trace "
                                 f"(--max-trace-bytes)")]
