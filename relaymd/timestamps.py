"""The one timestamp form RelayMD shows: ISO 8601 in UTC with its offset
(`2026-12-03T18:16:19.784411+00:00`), in `--json` output, log lines and, to the second, tables.

Standard library only: the worker's logging uses it too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal


def iso_timestamp(
    when: datetime, timespec: Literal["microseconds", "seconds"] = "microseconds"
) -> str:
    """`when` in the one form; a naive time is RelayMD's UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec=timespec)


def now_iso() -> str:
    return iso_timestamp(datetime.now(UTC))
