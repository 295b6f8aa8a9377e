"""The worker's version, as reported in heartbeats."""

from __future__ import annotations

from importlib import metadata


def worker_version() -> str:
    try:
        return metadata.version("relaymd")
    except metadata.PackageNotFoundError:
        from relaymd import __version__

        return __version__
