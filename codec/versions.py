"""The installed versions a run's provenance records and `compactsim --version` prints,
read from the distributions' metadata (both the client and the server ask)."""

from __future__ import annotations

import importlib.metadata


def installed_version(dist: str = "compactsim") -> str | None:
    """The version of installed distribution `dist`, or None when it is not installed
    (a source tree run without an install)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
