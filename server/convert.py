"""The server's mapping of results to the API's messages (`compactsim.proto.v1`): run
summaries, latency histograms, time series and reports out (config errors become
`google.rpc.BadRequest` in `server.rpc_errors`).

Specs in and out go through the spec codec, `compactsim.codec.spec`, which the client
shares; its entry points are imported here so that the servicer maps every message
through this one module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

from compactsim.codec.spec import (  # noqa: F401  (the servicer's spec entry points)
    config_from_proto,
    raw_from_proto,
    spec_from_dict,
    spec_sha256,
    spec_to_proto,
)
from compactsim.proto.v1 import run_pb2, sweep_pb2
from compactsim.sim.histogram import Histogram
from compactsim.sim.run import RunResult
from compactsim.sim.schema import ConfigError  # noqa: F401  (what the spec entry points raise)


def summary_to_struct(summary: Mapping[str, Any]) -> struct_pb2.Struct:
    """A run summary as a Struct (numbers become doubles; keys become strings)."""
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps(summary, default=float)))   # numpy numbers too
    return struct


def histograms_to_proto(latency: Mapping[str, Histogram]) -> list[run_pb2.LatencyHistogram]:
    """Latency histograms by name, with their non-empty buckets."""
    return [run_pb2.LatencyHistogram(
        name=name, count=h.n, sum_seconds=h.total_s, max_seconds=h.max_s,
        p50_seconds=h.percentile(0.5), p90_seconds=h.percentile(0.9),
        p99_seconds=h.percentile(0.99),
        buckets=[run_pb2.HistogramBucket(upper_bound_seconds=b, count=c)
                 for b, c in h.buckets()])
        for name, h in sorted(latency.items())]


def _percentile(buckets: list, n: int, max_s: float, q: float) -> float:
    """As `Histogram.percentile`, from (upper bound, count) buckets by increasing bound."""
    if n <= 0:
        return 0.0
    rank, seen = max(1, math.ceil(q * n)), 0
    for bound, count in buckets:
        seen += count
        if seen >= rank:
            return min(float(bound), max_s)
    return max_s


def histograms_from_message(data: Mapping[str, Mapping[str, Any]]
                            ) -> list[run_pb2.LatencyHistogram]:
    """The worker's `histograms_message` (name -> {"n", "sum_s", "max_s", "buckets"}) as
    LatencyHistogram messages: the same ones `histograms_to_proto` makes of the histograms
    themselves."""
    out = []
    for name, h in sorted(data.items()):
        buckets = [(float(b), int(c)) for b, c in h.get("buckets", [])]
        n, max_s = int(h.get("n", 0)), float(h.get("max_s", 0.0))
        out.append(run_pb2.LatencyHistogram(
            name=name, count=n, sum_seconds=float(h.get("sum_s", 0.0)), max_seconds=max_s,
            p50_seconds=_percentile(buckets, n, max_s, 0.5),
            p90_seconds=_percentile(buckets, n, max_s, 0.9),
            p99_seconds=_percentile(buckets, n, max_s, 0.99),
            buckets=[run_pb2.HistogramBucket(upper_bound_seconds=b, count=c)
                     for b, c in buckets]))
    return out


def series_to_proto(rows: list[Mapping[str, float]]) -> tuple[list[str], list[run_pb2.Sample]]:
    """Time series rows (`sim.sampling` rows, `time_s` plus columns) as column names and
    samples; a column a row lacks is NaN."""
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "time_s"))
    return columns, [run_pb2.Sample(time_seconds=row["time_s"],
                                    values=[float(row.get(c, float("nan"))) for c in columns])
                     for row in rows]


def report_to_proto(name: str, result: RunResult, full: bool = False) -> run_pb2.RunReport:
    """The report `runs/{run}/report` of a finished run; `full` adds trace and fault log."""
    return run_pb2.RunReport(
        name=name, summary=summary_to_struct(result.summary),
        procfs_files=[run_pb2.ProcfsFile(name=k, text=v) for k, v in result.files.items()],
        histograms=histograms_to_proto(result.latency),
        trace=result.trace if full else "", fault_log=result.fault_log if full else "")


def experiment_to_proto(result: Mapping[str, Any]) -> sweep_pb2.Experiment:
    """codec/stats.py's experiment record as the Experiment message (None as NaN)."""
    def num(x: Any) -> float:
        return math.nan if x is None else float(x)

    out = sweep_pb2.Experiment(method=result["method"], confidence=result["confidence"],
                               alpha=result["alpha"], baseline=result["baseline"],
                               arms=result["arms"], seeds=result["seeds"])
    for row in result["metrics"]:
        m = out.metrics.add(metric=row["metric"])
        for a in row["arms"]:
            m.arms.add(arm=a["arm"], count=a["count"], mean=num(a["mean"]),
                       ci_low=num(a["ci_low"]), ci_high=num(a["ci_high"]), values=a["values"])
        for d in row["differences"]:
            m.differences.add(arm=d["arm"], pairs=d["pairs"], mean=num(d["mean"]),
                              ci_low=num(d["ci_low"]), ci_high=num(d["ci_high"]),
                              relative=num(d["relative"]), p_value=num(d["p_value"]),
                              q_value=num(d["q_value"]), significant=d["significant"],
                              differences=d["differences"])
    return out
