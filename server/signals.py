"""SIGTERM and SIGINT, handled from the first moment the server's main module runs.

`loop.add_signal_handler` can be called only once the event loop runs, that is after the
heavy imports and while the server is being built; until then a SIGTERM kills the process
by the signal (exit -15), and `asyncio.run` puts the default action back when it closes
its loop. `StopSignal.install()` sets plain `signal.signal` handlers as the first thing
the main module does (stdlib only, before grpc, protobuf or the simulator are imported)
and keeps them until the process exits: a signal that comes early is remembered, one
that comes while the loop runs wakes it, and any number of them stop the server once.
The `compactsim-server` command starts in `server.entry`, which does the same before it
imports the server.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """Remembers the first stop signal; `wake_on(fn)` calls `fn` (thread-safe) for one
    that came before or comes later."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._wake: Callable[[], object] | None = None

    @classmethod
    def install(cls) -> StopSignal:
        stop = cls()
        for sig in SIGNALS:
            signal.signal(sig, stop._on_signal)
        return stop

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum
        wake = self._wake
        if wake is not None:
            try:
                wake()
            except RuntimeError:   # the loop is closed: the server has stopped already
                pass

    def wake_on(self, fn: Callable[[], object] | None) -> None:
        """From now on a stop signal calls `fn` (None: nobody); at once if one came."""
        self._wake = fn                # first, so a signal arriving now is not missed
        if fn is not None and self.received is not None:
            fn()

