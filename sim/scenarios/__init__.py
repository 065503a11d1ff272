"""Preset scenarios: YAML files beside this module, each a description and a spec."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from compactsim.sim.schema import ConfigError, FieldError


def _files():
    return sorted((p for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml")),
                  key=lambda p: p.name)


def list_scenarios() -> dict[str, str]:
    """Name -> one-line description."""
    return {p.name[:-5]: yaml.safe_load(p.read_text())["description"].strip().splitlines()[0]
            for p in _files()}


def load_scenario(name: str) -> dict[str, Any]:
    """The raw spec of a preset (to which overrides apply before validation)."""
    for p in _files():
        if p.name[:-5] == name:
            return yaml.safe_load(p.read_text())["spec"]
    raise ConfigError([FieldError("scenario", f"{name!r} is not a preset "
                                              f"({', '.join(list_scenarios())})")])
