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
