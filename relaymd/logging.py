"""Operator-side logging: structlog, JSON via orjson, console when RELAYMD_ENV=development.

Usage: `log = get_logger(__name__); log.info("allocation_submitted", cluster=..., slurm_id=...)`.
Event names are snake_case words; details go in keyword fields, never in f-strings.
"""

from __future__ import annotations

from relaymd.logsetup import add_secret, configure, get_logger

__all__ = ["add_secret", "configure", "get_logger"]
