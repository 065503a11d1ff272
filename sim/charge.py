"""Turning allocator work into simulated time, with `zone->lock` held where the kernel
holds it.

Per-cpu list hits cost CPU time only; it accumulates as the task's debt and is paid in
one wait at the next point the task must wait anyway (a lock, the end of a request), so
a run spends one SimPy event per batch rather than per page. Buddy operations and pcp
refills/drains happen under `zone->lock`: the task pays its debt, takes the lock (queueing
FIFO behind other holders) and holds it for the work's cost. Simplified: the free lists
change when the call starts; the lock decides when the caller may go on.
"""

from __future__ import annotations

import cython

from compactsim.sim.costs import Costs
from compactsim.sim.locks import SimLock
from compactsim.sim import page_alloc
from compactsim.sim.page_alloc import Outcome
from compactsim.sim.task import Task

PCP_BATCH_REF = 63     # the batch size the zone_lock_batch_hold_us measurement used
# The kinds of work, as C constants where compiled.
WORK_PCP = cython.declare(cython.int, page_alloc.WORK_PCP)
WORK_REFILL = cython.declare(cython.int, page_alloc.WORK_REFILL)


def alloc_cost(costs: Costs, out: Outcome, order: int) -> tuple[float, float]:
    """(cpu seconds outside the lock, seconds under zone->lock) of one allocation."""
    if out.work == WORK_PCP:
        return costs.pcp_alloc_ns * 1e-9, 0.0
    if out.work == WORK_REFILL:
        return costs.pcp_alloc_ns * 1e-9, _batch_hold(costs, out.batch)
    if order >= 9:
        return 0.0, costs.buddy_alloc_order9_us * 1e-6
    return 0.0, costs.buddy_alloc_ns * 1e-9


def free_cost(costs: Costs, out: Outcome) -> tuple[float, float]:
    """(cpu seconds outside the lock, seconds under zone->lock) of one free."""
    if out.work == WORK_PCP:
        return costs.pcp_free_ns * 1e-9, 0.0
    if out.work == WORK_REFILL:
        return costs.pcp_free_ns * 1e-9, _batch_hold(costs, out.batch)
    return 0.0, costs.buddy_alloc_ns * 1e-9


def _batch_hold(costs: Costs, batch: int) -> float:
    return max(costs.zone_lock_batch_hold_us * 1e-6 * batch / PCP_BATCH_REF,
               costs.buddy_page_ns * 1e-9 * batch)


@cython.locals(task=Task, out=Outcome, lock=SimLock, cpu_s=cython.double,
               locked_s=cython.double)
def charge(env, task: Task, cpu_s: float, out: Outcome | None = None, locked_s: float = 0.0):
    """Add `cpu_s` to the task's debt; if `locked_s`, pay the debt and hold the outcome
    zone's lock for `locked_s`."""
    task.debt += cpu_s
    if not locked_s or out is None or out.zone is None:
        task.debt += locked_s
        return
    if task.debt:
        yield env.timeout(task.debt)
        task.debt = 0.0
    lock = out.zone.lock
    if not lock.trylock():
        yield lock.lock()
    yield env.timeout(locked_s)
    lock.unlock()


@cython.locals(task=Task, out=Outcome, cpu_s=cython.double, locked_s=cython.double)
def charge_frees(env, task: Task, costs: Costs, outcomes: list[Outcome]):
    """Pay for a list of frees: pcp frees as debt, drains and buddy frees under the lock."""
    for out in outcomes:
        cpu_s, locked_s = free_cost(costs, out)
        if locked_s:
            yield from charge(env, task, cpu_s, out, locked_s)
        else:
            task.debt += cpu_s


@cython.locals(task=Task)
def settle(env, task: Task):
    """Wait out the task's debt."""
    if task.debt > 0:
        debt, task.debt = task.debt, 0.0
        yield env.timeout(debt)
