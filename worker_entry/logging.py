"""Worker-side logging: the same structlog setup as the operator (relaymd.logsetup)."""

from __future__ import annotations

from relaymd.logsetup import add_secret, configure, get_logger

__all__ = ["add_secret", "configure", "get_logger"]
