"""Runs and sweeps by resource name, and changing them: a deleted one is NOT_FOUND to
everyone, and only its creator or an admin may cancel or delete it (else
PERMISSION_DENIED, ErrorInfo reason NOT_OWNER). One lookup serves runs and sweeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from compactsim.proto.v1 import run_pb2, sweep_pb2
from compactsim.server import mapping, requests
from compactsim.server.auth import Caller
from compactsim.server.manager import RunManager
from compactsim.server.rpc_errors import not_found, not_owner, precondition, unavailable
from compactsim.server.store import NotFound, RunRecord, SweepRecord, WrongState

R = TypeVar("R", RunRecord, SweepRecord)


def _live(kind: str, name: str, fetch: Callable[[], R], show_deleted: bool = False) -> R:
    """`fetch()`'s record of the resource `name`: NOT_FOUND if there is none, or if it was
    deleted (unless `show_deleted`)."""
    try:
        rec = fetch()
    except NotFound:
        raise not_found(kind, name) from None
    if rec.deleted and not show_deleted:
        raise not_found(kind, name, f"{name} was deleted")
    return rec


def _owned(rec: R, name: str, caller: Caller, verb: str) -> R:
    if rec.creator != caller.user and not caller.admin:
        raise not_owner(name, rec.creator, caller.user, verb)
    return rec


class Resources:
    """Lookups answer records; changes answer the changed resource's message."""

    def __init__(self, manager: RunManager, runs: mapping.Runs):
        self.manager = manager
        self.store = manager.store
        self.runs = runs

    def run(self, name: str, field: str = "name") -> RunRecord:
        run_id = requests.run_id(name, field)
        return _live("Run", name, lambda: self.store.get_run(run_id))

    def sweep(self, name: str, show_deleted: bool = False) -> SweepRecord:
        sweep_id = requests.sweep_id(name)
        return _live("Sweep", name, lambda: self.store.get_sweep(sweep_id), show_deleted)

    def sweep_message(self, name: str, show_deleted: bool = False) -> sweep_pb2.Sweep:
        rec = self.sweep(name, show_deleted)
        return mapping.sweep(rec, self.store.sweep_runs(rec.id))

    def cancel_run(self, name: str, caller: Caller) -> run_pb2.Run:
        rec = _owned(self.run(name), name, caller, "cancel")
        try:
            return self.runs.run(self.manager.cancel(rec.id))
        except WrongState as exc:
            raise precondition(name, str(exc)) from None

    def delete_run(self, name: str, force: bool, caller: Caller) -> run_pb2.Run:
        rec = _owned(self.run(name), name, caller, "delete")
        try:
            return self.runs.run(self.manager.delete(rec.id, force=force))
        except WrongState:
            raise precondition(name, f"{name} is {rec.state.value}; cancel it first or "
                                     f"delete with force") from None
        except TimeoutError:
            raise unavailable(f"{name} is still stopping; try again") from None

    def cancel_sweep(self, name: str, caller: Caller) -> sweep_pb2.Sweep:
        """Cancel the runs of the sweep that have not ended."""
        rec = _owned(self.sweep(name), name, caller, "cancel")
        for run in self.store.sweep_runs(rec.id):
            if not run.state.terminal:
                try:
                    self.manager.cancel(run.id)
                except WrongState:   # it ended meanwhile
                    pass
        return self.sweep_message(name)

    def delete_sweep(self, name: str, force: bool, caller: Caller) -> sweep_pb2.Sweep:
        """Delete the sweep and its runs (with `force`, cancelling those still going)."""
        rec = _owned(self.sweep(name), name, caller, "delete")
        runs = self.store.sweep_runs(rec.id)
        running = [f"runs/{r.id}" for r in runs if not r.state.terminal]
        if running and not force:
            raise precondition(name, f"{name} has {len(running)} runs that have not ended "
                                     f"({', '.join(running[:3])}...); cancel it first or "
                                     f"delete with force")
        try:
            for run in runs:
                self.manager.delete(run.id, force=force)
        except WrongState as exc:
            raise precondition(name, str(exc)) from None
        except TimeoutError:
            raise unavailable(f"{name} has runs still stopping; try again") from None
        self.store.soft_delete_sweep(rec.id)
        return self.sweep_message(name, show_deleted=True)
