"""The run's SimPy environments (sim/environment.py) step exactly as SimPy's own.

Their `now`, `schedule` and `timeout` are compiled overrides of SimPy's; a simulation on
them must see the same events in the same order at the same times, and count every
event SimPy schedules (timeouts, process starts and ends, resource grants), as a plain
counting subclass of SimPy's environment does."""

from __future__ import annotations

import simpy
import simpy.rt
from simpy.events import Timeout

from compactsim.sim.environment import CountingEnvironment, PacedEnvironment


class ReferenceCounting(simpy.Environment):
    """SimPy's environment, counting through SimPy's own schedule."""

    events_scheduled = 0

    def schedule(self, event, priority=1, delay=0):
        self.events_scheduled += 1
        super().schedule(event, priority, delay)


def scenario(env) -> list[tuple[float, str]]:
    """Processes that tie in time, contend for a resource, interrupt and succeed events:
    the order SimPy breaks ties in (priority, then scheduling order) decides the log."""
    log: list[tuple[float, str]] = []
    lock = simpy.Resource(env, capacity=1)
    gate = env.event()

    def worker(name: str, delays: list[float]):
        for d in delays:
            with lock.request() as req:
                yield req
                log.append((env.now, f"{name} holds"))
                yield env.timeout(d)
            log.append((env.now, f"{name} done {d}"))
        yield gate
        log.append((env.now, f"{name} through the gate"))

    def opener():
        yield env.timeout(2.5)
        gate.succeed()
        log.append((env.now, "gate opened"))

    def sleeper():
        try:
            yield env.timeout(100)
        except simpy.Interrupt as i:
            log.append((env.now, f"interrupted: {i.cause}"))

    for n, delays in enumerate(([1, 0.5, 0], [0.5, 1], [0, 0, 1.5])):
        env.process(worker(f"w{n}", delays))
    env.process(opener())
    s = env.process(sleeper())

    def interrupter():
        yield env.timeout(1)
        s.interrupt("wake")
    env.process(interrupter())
    env.run(until=10)
    return log


def test_same_events_in_the_same_order_as_simpy():
    ref, ours = ReferenceCounting(), CountingEnvironment()
    expected = scenario(ref)
    assert scenario(ours) == expected
    assert len(expected) > 15
    assert ours.events_scheduled == ref.events_scheduled > 30
    assert ours.now == ref.now == 10


def test_timeout_is_a_simpy_timeout_of_this_environment():
    env = CountingEnvironment(initial_time=5)
    t = env.timeout(2, value="v")
    assert isinstance(t, Timeout) and t.env is env
    assert env.events_scheduled == 1
    env.run()
    assert (env.now, t.value) == (7, "v")


def test_paced_environment_counts_and_keeps_real_time():
    env = PacedEnvironment(factor=0.001, strict=False)
    ref = ReferenceCounting()
    assert scenario(env) == scenario(ref)
    assert env.events_scheduled == ref.events_scheduled
    assert isinstance(env, simpy.rt.RealtimeEnvironment)
