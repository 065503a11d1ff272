"""The store's records: plain frozen dataclasses (nothing here knows protobuf or SQL
beyond the column order a row comes in), specs, summaries and payloads as JSON."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compactsim.codec.runstate import RunState
from compactsim.server.store.errors import InvalidArgument, NotFound


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a run has got."""

    sim_time_s: float = 0.0   # simulated time reached, seconds
    fraction: float = 0.0     # of the simulated duration, 0..1
    events: int = 0           # SimPy events processed
    wall_s: float = 0.0       # wall-clock time spent running, seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """One run as stored. Times are ns since the epoch (None: not yet)."""

    id: str
    display_name: str
    scenario: str                 # preset the spec came from ("" for a spec file)
    spec_json: str                # the raw spec as submitted
    state: RunState
    error_reason: str             # short machine-readable cause ("interrupted", ...) or ""
    error_message: str            # for people, or ""
    interrupted: bool             # cut off by a server crash or restart
    progress: Progress
    summary_json: str | None
    labels: dict[str, str]
    provenance: dict[str, Any]    # code version, seed, spec hash, library versions
    creator: str
    request_id: str | None        # unique per creator: makes CreateRun retries safe
    sweep_id: str                 # "" when not part of a sweep
    create_time_ns: int
    start_time_ns: int | None
    end_time_ns: int | None
    update_time_ns: int
    deleted: bool                 # soft-deleted: hidden from lists, NOT_FOUND to readers
    delete_time_ns: int | None
    last_sequence: int            # sequence of the run's latest event

    @property
    def spec(self) -> dict:
        return json.loads(self.spec_json)

    @property
    def summary(self) -> dict | None:
        return None if self.summary_json is None else json.loads(self.summary_json)


@dataclass(frozen=True, slots=True)
class RunEvent:
    run_id: str
    sequence: int      # 1, 2, 3... per run, without gaps
    time_ns: int
    type: str          # "state", "progress", "deleted" or an append_event() type
    payload: dict


@dataclass(frozen=True, slots=True)
class Sample:
    index: int         # 0, 1, 2... per run in the order added
    sim_time_s: float
    row: dict


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepRecord:
    id: str
    display_name: str
    base_spec_json: str
    grid_json: str
    creator: str
    create_time_ns: int
    deleted: bool

    @property
    def base_spec(self) -> dict:
        return json.loads(self.base_spec_json)

    @property
    def grid(self) -> Any:
        return json.loads(self.grid_json)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRun:
    """What create_run() and create_sweep() need to create a run."""

    spec: Mapping[str, Any]
    display_name: str = ""
    scenario: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    creator: str = ""
    request_id: str | None = None
    run_id: str | None = None      # chosen by the caller; a fresh id when None


# The columns a RunRecord is read from, in its fields' order (ahead of any extra columns
# a query selects after them: sort keys, rowids).
RUN_COLUMNS = ("id", "display_name", "scenario", "spec_json", "state", "error_reason",
               "error_message", "interrupted", "sim_time_s", "fraction", "events", "wall_s",
               "summary_json", "labels_json", "provenance_json", "creator", "request_id",
               "sweep_id", "create_time_ns", "start_time_ns", "end_time_ns", "update_time_ns",
               "deleted", "delete_time_ns", "last_sequence")
RUN_SELECT = ", ".join(f"runs.{c}" for c in RUN_COLUMNS)
SWEEP_SELECT = ("id, display_name, base_spec_json, grid_json, creator, create_time_ns, "
                "deleted")


def run_from_row(r: Sequence) -> RunRecord:
    return RunRecord(
        id=r[0], display_name=r[1], scenario=r[2], spec_json=r[3], state=RunState(r[4]),
        error_reason=r[5], error_message=r[6], interrupted=bool(r[7]),
        progress=Progress(r[8], r[9], r[10], r[11]), summary_json=r[12],
        labels=json.loads(r[13]), provenance=json.loads(r[14]), creator=r[15],
        request_id=r[16], sweep_id=r[17], create_time_ns=r[18], start_time_ns=r[19],
        end_time_ns=r[20], update_time_ns=r[21], deleted=bool(r[22]), delete_time_ns=r[23],
        last_sequence=r[24])


def sweep_from_row(r: Sequence) -> SweepRecord:
    return SweepRecord(id=r[0], display_name=r[1], base_spec_json=r[2], grid_json=r[3],
                       creator=r[4], create_time_ns=r[5], deleted=bool(r[6]))


def to_json(what: str, value: Any, *, strict: bool = True) -> str:
    """`value` as JSON (InvalidArgument if it has none). Not strict (summaries, samples):
    NaN and infinities pass, as Python's json writes and reads them."""
    try:
        return json.dumps(value, allow_nan=not strict)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what} is not representable as JSON: {e}") from None


def fetch_run(c: sqlite3.Connection, run_id: str) -> RunRecord:
    """The run `run_id` as `c` sees it; NotFound if there is none."""
    row = c.execute(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return run_from_row(row)


def fetch_sweep(c: sqlite3.Connection, sweep_id: str) -> SweepRecord:
    """The sweep `sweep_id` as `c` sees it; NotFound if there is none."""
    row = c.execute(f"SELECT {SWEEP_SELECT} FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
    if row is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep_from_row(row)
