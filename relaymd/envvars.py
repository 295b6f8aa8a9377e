"""RELAYMD_* environment values read as numbers or names: a bad value names the variable.

Imports only the standard library: the CLI checks its environment before anything else.
"""

from __future__ import annotations

import math
import os

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")


class EnvVarError(ValueError):
    """A RELAYMD_* variable holds a value RelayMD cannot use; the message names it."""


def env_float(name: str, default: float, *, maximum: float) -> float:
    """A positive finite number from `name` (unset or empty: `default`)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise EnvVarError(f"environment variable {name}={raw!r}: not a number") from None
    if not math.isfinite(value) or value <= 0 or value > maximum:
        raise EnvVarError(
            f"environment variable {name}={raw!r}: must be a number above 0 and at most {maximum:g}"
        )
    return value


def check_cli_environment() -> None:
    """The variables every CLI command may read, checked up front."""
    level = os.environ.get("RELAYMD_LOG_LEVEL")
    if level is not None and level.strip() and level.strip().upper() not in LOG_LEVELS:
        raise EnvVarError(
            f"environment variable RELAYMD_LOG_LEVEL={level!r}: use one of {', '.join(LOG_LEVELS)}"
        )
    for name in ("RELAYMD_STATE_DIR", "RELAYMD_DATA_DIR", "RELAYMD_CONFIG"):
        value = os.environ.get(name)
        if value is not None and value != value.strip():
            raise EnvVarError(
                f"environment variable {name}={value!r}: leading or trailing whitespace; "
                "remove it (or unset the variable for the default)"
            )
