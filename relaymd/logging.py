"""Logging: structlog, JSON via orjson, console when RELAYMD_ENV=development.

Usage: `log = get_logger(__name__); log.info("allocation_submitted", cluster=..., slurm_id=...)`.
Event names are snake_case words; details go in keyword fields, never in f-strings.

The one configuration both sides use: the worker's worker_entry/logging.py builds on it, so
this module imports only the standard library, structlog and orjson.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import IO, Any, Protocol, TextIO, cast

import orjson
import structlog
from structlog.typing import FilteringBoundLogger

from relaymd.timestamps import now_iso

_secrets: set[str] = set()
_configured = False
REDACTED = "**redacted**"
# daemon.log: rotated at this size, this many old files kept (daemon.log.1 is the newest).
LOG_MAX_BYTES = int(os.environ.get("RELAYMD_LOG_MAX_BYTES", str(20 * 1024 * 1024)))
LOG_BACKUPS = int(os.environ.get("RELAYMD_LOG_BACKUPS", "5"))
_sink: RotatingLogFile | None = None


class LogSink(Protocol):
    """Where rendered lines go: a text stream, or a file that rotates or tees itself."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class RotatingLogFile:
    """A text sink for structlog that rotates by size, only between whole lines.

    With `capture_stdio`, file descriptors 1 and 2 point at the live file too (re-pointed at
    each rotation), so tracebacks and prints of the process land beside its events.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int, capture_stdio: bool) -> None:
        if max_bytes <= 0 or backups < 1:
            raise ValueError("max_bytes must be positive and backups at least 1")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.capture_stdio = capture_stdio
        self._file: IO[str] = self._open()

    def _open(self) -> IO[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open; closed on rotate)
        if self.capture_stdio:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(handle.fileno(), 1)
            os.dup2(handle.fileno(), 2)
        return handle

    def write(self, text: str) -> int:
        return self._file.write(text)

    def flush(self) -> None:
        # structlog's PrintLogger flushes after each whole line: the one safe place to rotate.
        self._file.flush()
        if os.fstat(self._file.fileno()).st_size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self._open()

    def close(self) -> None:
        self._file.close()


class _LibraryLogs(logging.Handler):
    """Sends stdlib logging (asyncssh, botocore, ...) through structlog: same format, same
    redaction, one `library_log` event with the library's logger name and message."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a library's bad format string
            message = str(record.msg)
        level = min(max(record.levelno // 10 * 10, logging.DEBUG), logging.CRITICAL)
        fields: dict[str, Any] = {"logger": record.name, "message": message}
        if record.exc_info:
            fields["exc_info"] = record.exc_info
        structlog.get_logger(record.name).log(level, "library_log", **fields)


def _route_library_logs(level: int) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LibraryLogs)]:
        root.removeHandler(handler)
    # Libraries are chatty below WARNING (asyncssh logs every channel): shown only at DEBUG.
    library_level = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    handler = _LibraryLogs(level=library_level)
    root.addHandler(handler)
    root.setLevel(library_level)


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


def _add_timestamp(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # The one form of --json output (relaymd.timestamps), not structlog's trailing "Z".
    event_dict["timestamp"] = now_iso()
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(
    *,
    development: bool | None = None,
    level: str | None = None,
    stream: LogSink | None = None,
    log_file: Path | None = None,
    max_bytes: int | None = None,
    backups: int | None = None,
    capture_stdio: bool = False,
) -> None:
    """Configure structlog once per process; later calls reconfigure (tests, CLI flags).

    `log_file`: write to that file, rotated by size (`max_bytes`, `backups` old files).
    """
    global _configured, _sink
    if development is None:
        development = os.environ.get("RELAYMD_ENV", "").lower() == "development"
    level_name = (level or os.environ.get("RELAYMD_LOG_LEVEL", "INFO")).upper()
    level_number = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    if _sink is not None:
        _sink.close()
        _sink = None
    output: LogSink = stream or sys.stderr
    if log_file is not None:
        _sink = RotatingLogFile(
            log_file,
            LOG_MAX_BYTES if max_bytes is None else max_bytes,
            LOG_BACKUPS if backups is None else backups,
            capture_stdio,
        )
        output = _sink
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if development
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_timestamp,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        # PrintLogger only writes and flushes: any LogSink serves as its file.
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, output)),
        cache_logger_on_first_use=False,
    )
    _route_library_logs(level_number)
    _configured = True


def get_logger(name: str) -> FilteringBoundLogger:
    if not _configured:
        configure()
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
