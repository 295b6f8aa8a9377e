"""Exit codes and the one exception type commands raise for errors a user can act on."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented in docs/cli.md; scripts may rely on them."""

    OK = 0
    FAILED = 1  # the operation was attempted and failed (storage error, worker test failed)
    USAGE = 2  # bad arguments, invalid config or job spec
    UNREACHABLE = 3  # a cluster could not be reached (SSH, local transport)
    NOT_FOUND = 4  # no such job, cluster, directory or file
    CONFLICT = 5  # not allowed in the current state (e.g. hold a running job, daemon running)
    INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """Printed as one `error:` line plus an optional `hint:` line; never a traceback."""

    def __init__(self, message: str, *, hint: str | None = None, code: ExitCode = ExitCode.FAILED):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
