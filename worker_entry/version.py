"""The worker's version, as reported in heartbeats."""

from __future__ import annotations


def worker_version() -> str:
    from relaymd import __version__

    return __version__
