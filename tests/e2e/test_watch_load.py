"""Open watch streams must not starve the other RPCs: a stream waiting for its run to
change holds no thread of the server's pool (server.changes), and still hears the change."""

import threading
import time

from serverproc import TERMINAL, R, create, spec, wait_state

from compactsim.proto.v1 import simulator_pb2

STREAMS = 40


def test_many_idle_watch_streams_leave_getrun_fast_and_all_hear_the_end(make_server):
    server = make_server("--workers", "1")
    stub = server.stub
    # one paced run holds the only worker (20 wall seconds), the others wait behind it
    busy = create(stub, spec(duration=2.0, pace=0.1))
    wait_state(stub, busy.name, (R.RUNNING,))
    queued = [create(stub).name for _ in range(STREAMS)]
    seen: dict[str, list] = {}
    started = threading.Barrier(STREAMS + 1, timeout=60)

    def watch(name):
        msgs = []
        seen[name] = msgs
        stream = stub.WatchRun(simulator_pb2.WatchRunRequest(name=name, after_sequence=0),
                               timeout=120)
        for i, m in enumerate(stream):
            msgs.append(m)
            if i == 0:
                started.wait()

    threads = [threading.Thread(target=watch, args=(n,)) for n in queued]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(1.0)    # every stream is past its replay, waiting for a change
    took, states = [], set()
    for _ in range(20):
        t = time.perf_counter()
        run = stub.GetRun(simulator_pb2.GetRunRequest(name=busy.name), timeout=30)
        took.append(time.perf_counter() - t)
        states.add(run.state)
    # each stream used to hold a pool thread for up to 0.5 s at a time: seconds per call
    assert max(took) < 0.4, took
    assert states == {R.RUNNING}

    for name in queued:
        stub.CancelRun(simulator_pb2.CancelRunRequest(name=name), timeout=30)
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    for name in queued:
        events = [m.event for m in seen[name] if m.WhichOneof("message") == "event"]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert events[-1].state_change.state == R.CANCELLED
        assert events[-1].state_change.state in TERMINAL
    stub.CancelRun(simulator_pb2.CancelRunRequest(name=busy.name), timeout=30)
