"""What every command needs: the global options, the loaded config, the state store and
the daemon's pid.

Kept lazy: nothing here imports typer, pydantic models, boto3 or asyncssh until a command
asks, so `relaymd --version` and `relaymd status` stay instant.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from relaymd.cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from relaymd.config import LoadedConfig
    from relaymd.models import Job
    from relaymd.state import StateStore


@dataclass
class Options:
    config_path: Path | None = None
    debug: bool = False


OPTIONS = Options()
_loaded: LoadedConfig | None = None


def load() -> LoadedConfig:
    """The config for this invocation (explicit --config, $RELAYMD_CONFIG, XDG, embedded)."""
    global _loaded
    if _loaded is None:
        from relaymd.config import ConfigError, load_config

        try:
            _loaded = load_config(OPTIONS.config_path)
        except ConfigError as exc:
            raise CliError(
                str(exc),
                hint="fix the file, then check it with `relaymd config validate`",
                code=ExitCode.USAGE,
            ) from None
    return _loaded


def set_loaded(loaded: LoadedConfig) -> None:
    """The demo builds its own config in code; later calls of load() return it."""
    global _loaded
    _loaded = loaded


def open_state(loaded: LoadedConfig | None = None) -> StateStore:
    """The state store; read-only (changing nothing on disk) when the file or its folder
    cannot be written, so `status` and listings still work. Every failure names the path."""
    from relaymd.state import StateStore
    from relaymd.state import files as state_files
    from relaymd.state.errors import StateFileProblem, StateStoreError, describe_state_failure
    from relaymd.state.readonly import open_readonly

    global _state_file
    loaded = loaded or load()
    path = state_files.state_path(loaded.config)
    _state_file = path
    try:
        return StateStore.open(path)
    except StateFileProblem as exc:
        raise CliError(str(exc), hint=exc.hint) from None
    except StateStoreError as exc:
        raise CliError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        problem = describe_state_failure(exc, path)
    if problem.kind in ("readonly", "cantopen") and path.is_file():
        try:
            return open_readonly(path)
        except StateFileProblem as exc:
            raise CliError(str(exc), hint=exc.hint) from None
        except StateStoreError as exc:
            raise CliError(str(exc)) from None
        except (OSError, sqlite3.Error):
            pass  # the first failure says more
    raise CliError(str(problem), hint=problem.hint)


_state_file: Path | None = None


def state_failure(exc: BaseException) -> CliError:
    """A CliError for an SQLite/OS error met while using the state file of this command."""
    from relaymd import paths
    from relaymd.state.errors import describe_state_failure

    problem = describe_state_failure(exc, _state_file or paths.state_db())
    return CliError(str(problem), hint=problem.hint)


def read_pid() -> int | None:
    """The running daemon's pid, or None: asks the daemon's own lock (held for its whole
    life), so a stale file left by a crash never looks like a live daemon."""
    from relaymd import paths
    from relaymd.daemon.lock import DaemonLock

    return DaemonLock(paths.daemon_lock()).holder()


def find_job(state: StateStore, prefix: str) -> Job:
    """A job by full id or unique prefix; exit 4 when none, 2 when ambiguous."""
    matches = state.find_job_by_prefix(prefix) if prefix else []
    exact = [job for job in matches if job.id == prefix]
    if exact:
        return exact[0]
    if len(matches) > 1:
        shown = ", ".join(job.id for job in matches[:5])
        raise CliError(
            f"{prefix!r} matches {len(matches)} jobs ({shown}"
            f"{', ...' if len(matches) > 5 else ''})",
            hint="give more characters of the id",
            code=ExitCode.USAGE,
        )
    if not matches:
        raise CliError(
            f"no job matches {prefix!r}",
            hint="list jobs with `relaymd jobs list`",
            code=ExitCode.NOT_FOUND,
        )
    return matches[0]
