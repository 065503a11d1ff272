"""The `compactsim-server` command: stop signals handled first, then the server.

Installing the handlers before `compactsim.server.main` (and with it grpc, protobuf and
the simulator) is imported closes the window in which a SIGTERM would kill the process by
the signal (see `server.signals`).
"""

from __future__ import annotations

from compactsim.server.signals import StopSignal


def main() -> None:
    stop = StopSignal.install()
    from compactsim.server.main import main as server_main
    server_main(stop_signal=stop)
