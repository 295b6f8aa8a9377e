"""The one structlog configuration both sides use (relaymd/logging.py, worker_entry/logging.py).

Lives outside `logging.py` so the worker can import it without pulling in operator modules.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

_secrets: set[str] = set()
_configured = False
REDACTED = "**redacted**"


def add_secret(value: str | None) -> None:
    """Register a value that must never reach a log (keys, tokens, passwords)."""
    if value and len(value) >= 4:
        _secrets.add(value)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    if _secrets and not isinstance(value, int | float | bool | type(None)):
        return _redact_value(str(value))
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace every registered secret anywhere in the event."""
    if not _secrets:
        return event_dict
    for key in list(event_dict):
        event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(
    *, development: bool | None = None, level: str | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog once per process; later calls reconfigure (tests, CLI flags)."""
    global _configured
    if development is None:
        development = os.environ.get("RELAYMD_ENV", "").lower() == "development"
    level_name = (level or os.environ.get("RELAYMD_LOG_LEVEL", "INFO")).upper()
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if development
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str) -> Any:
    if not _configured:
        configure()
    return structlog.get_logger(name)
