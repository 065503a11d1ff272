"""What a load client process does: watch streams, paced CreateRun calls, a GetRun loop;
and the control phase's spinners.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import time

import grpc

from bench.loadtest import TERMINAL, TINY_SPEC, R, spec_proto
from compactsim.proto.v1 import simulator_pb2, simulator_pb2_grpc


@dataclasses.dataclass
class ClientPlan:
    """What one client process does."""

    index: int
    address: str
    sim_watches: int          # streams on the measured simulations
    queued_watches: int       # streams on its own first created runs
    creates: int
    create_window_s: float    # spread the creates over this long
    create_concurrency: int
    get_interval_s: float     # pause between two GetRun calls of the loop
    seed: int


@dataclasses.dataclass
class WatchResult:
    name: str
    terminal: int             # the terminal Run.State seen; 0 when none
    events: int
    gaps: int                 # events whose sequence was not the previous one + 1
    first_sequence: int
    error: str = ""


@dataclasses.dataclass
class ClientResult:
    index: int
    created: list[str]
    create_errors: dict[str, int]
    create_latency_s: list[float]
    get_latency_s: list[float]
    get_errors: dict[str, int]
    watches: list[WatchResult]


async def _watch(stub, name: str) -> WatchResult:
    """Watch from the first event (after_sequence=0) to the end of the stream."""
    res = WatchResult(name, 0, 0, 0, 0)
    expected = 1
    try:
        call = stub.WatchRun(simulator_pb2.WatchRunRequest(name=name, after_sequence=0))
        async for msg in call:
            if msg.WhichOneof("message") != "event":
                continue
            seq = msg.event.sequence
            if res.events == 0:
                res.first_sequence = seq
            if seq != expected:
                res.gaps += 1
            expected = seq + 1
            res.events += 1
            if (msg.event.WhichOneof("kind") == "state_change"
                    and msg.event.state_change.state in TERMINAL):
                res.terminal = msg.event.state_change.state
    except grpc.RpcError as err:
        res.error = f"{err.code().name}: {err.details()}"
    return res


async def _client_main(plan: ClientPlan, sims: list[str], stop, counters) -> ClientResult:
    rng = random.Random(plan.seed)
    tiny = spec_proto(TINY_SPEC)
    out = ClientResult(plan.index, [], collections.Counter(), [], [], collections.Counter(), [])
    async with grpc.aio.insecure_channel(plan.address) as channel:
        stub = simulator_pb2_grpc.SimulatorStub(channel)
        watches = [asyncio.create_task(_watch(stub, sims[(plan.index + i) % len(sims)]))
                   for i in range(plan.sim_watches)]
        counters[plan.index * 4] = len(watches)

        async def creator() -> None:
            sem = asyncio.Semaphore(plan.create_concurrency)
            start = time.monotonic()

            async def one(i: int) -> None:
                async with sem:
                    t = time.perf_counter()
                    try:
                        run = await stub.CreateRun(simulator_pb2.CreateRunRequest(
                            run=R(spec=tiny, display_name=f"load c{plan.index} #{i}",
                                  labels={"load": "queued"})), timeout=60)
                    except grpc.RpcError as err:
                        out.create_errors[err.code().name] += 1
                        return
                    out.create_latency_s.append(time.perf_counter() - t)
                    out.created.append(run.name)
                    counters[plan.index * 4 + 1] += 1
                    if len(watches) < plan.sim_watches + plan.queued_watches:
                        watches.append(asyncio.create_task(_watch(stub, run.name)))
                        counters[plan.index * 4] = len(watches)

            tasks = []
            for i in range(plan.creates):
                due = start + plan.create_window_s * i / plan.creates
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)

        async def getter() -> None:
            while not stop.is_set():
                pool = sims + out.created[-50:]
                name = rng.choice(pool)
                t = time.perf_counter()
                try:
                    await stub.GetRun(simulator_pb2.GetRunRequest(name=name), timeout=60)
                    out.get_latency_s.append(time.perf_counter() - t)
                except grpc.RpcError as err:
                    out.get_errors[err.code().name] += 1
                counters[plan.index * 4 + 2] += 1
                await asyncio.sleep(plan.get_interval_s)

        get_task = asyncio.create_task(getter())
        await creator()
        await get_task
        counters[plan.index * 4 + 3] = 1   # all creates answered
        out.watches = list(await asyncio.gather(*watches))
    return out


def client_process(plan: ClientPlan, inbox, outbox, stop, counters) -> None:
    """Entry point of a client process: report ready, wait for the run names, load."""
    outbox.put(("ready", plan.index))
    sims = inbox.get()
    result = asyncio.run(_client_main(plan, sims, stop, counters))
    outbox.put(("result", result))



def spin(stop) -> None:
    """A control-phase process: keeps its CPU busy and sends nothing."""
    while not stop.is_set():
        for _ in range(100_000):
            pass
