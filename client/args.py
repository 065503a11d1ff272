"""What the local and the remote commands share: the spec options, and the message for a
command whose optional dependencies (an extra) are not installed."""

from __future__ import annotations

import argparse
from pathlib import Path


def spec_args(p: argparse.ArgumentParser, scenario_help: str) -> None:
    """The options that say what to simulate: a preset or a spec file, and overrides."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scenario", help=scenario_help)
    src.add_argument("--spec", type=Path, help="a YAML or JSON spec file")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="PATH=VALUE", help="override a spec field, e.g. tunables.swappiness=10")
    p.add_argument("--seed", type=int, help="same as --set seed=N")
    p.add_argument("--duration", help="same as --set duration=VALUE (e.g. 60s)")


def missing_extra(command: str, extra: str, exc: ModuleNotFoundError) -> str:
    """Why `command` cannot run: it needs the `extra` of the package (a client-only install
    has the remote commands and none of the simulator's or the plots' dependencies)."""
    return (f"`{command}` needs the {extra!r} extra ({exc.name} is not installed): "
            f"pip install 'compactsim[{extra}]'")
def connection_args(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """How to reach the server: on the top-level parser (`top`, with the defaults) and on
    every remote command, so `compactsim list --token T` works as `compactsim --token T
    list` does (a value given after the command wins)."""
    def default(value):
        return value if top else argparse.SUPPRESS
    p.add_argument("--server", metavar="HOST:PORT", default=default(None),
                   help="the compactsim server of the remote commands "
                        "(default: $COMPACTSIM_SERVER)")
    p.add_argument("--timeout", type=float, default=default(30.0),
                   help="seconds each server call may take (not watching)")
    p.add_argument("--token", default=default(None),
                   help="bearer token of a server with --token-file "
                        "(default: $COMPACTSIM_TOKEN)")
    p.add_argument("--ca-cert", metavar="PEM", default=default(None),
                   help="CA certificate of a TLS server; turns TLS on "
                        "(default: $COMPACTSIM_CA_CERT)")
    p.add_argument("--server-name", metavar="NAME", default=default(None),
                   help="the name the server's certificate must carry, if not the host of "
                        "--server")
