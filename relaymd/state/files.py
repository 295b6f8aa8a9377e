"""Where the state database lives and who may read it.

The file holds job histories and storage locations: it is created 0600 in a directory created
0700, whatever the umask. SQLite gives its -wal and -shm files the database file's mode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from relaymd import paths

if TYPE_CHECKING:
    from relaymd.models import Config

DIR_MODE = 0o700
FILE_MODE = 0o600
_SIDE_FILES = ("-wal", "-shm", "-journal")


def resolve(path: Path | None) -> Path:
    return (path if path is not None else paths.state_db()).expanduser().absolute()


def state_path(config: Config) -> Path:
    """The state database a config names: its `state_path`, else the XDG default; absolute."""
    return resolve(Path(config.state_path) if config.state_path else None)


def _make_dirs(directory: Path) -> None:
    """Create missing directories 0700; tighten only the ones we create (and our own
    default state directory), never a shared folder the user pointed us into."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process won the race; it applies the same mode
            continue
        os.chmod(created, DIR_MODE)  # mkdir's mode is filtered by the umask
    if directory == paths.state_dir().expanduser().absolute():
        os.chmod(directory, DIR_MODE)


def _tighten(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(info.st_mode) != FILE_MODE and info.st_uid == os.getuid():
        os.chmod(path, FILE_MODE)


def prepare(path: Path | None) -> Path:
    """The database path, with its directory and an owner-only file in place."""
    target = resolve(path)
    _make_dirs(target.parent)
    # Create it only when absent: closing any descriptor of an existing database drops the
    # POSIX locks of every SQLite connection this process holds on it (a second StateStore in
    # one process, as the Python API opens, would leave the first reading a deleted WAL).
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    for candidate in (target, *(Path(f"{target}{suffix}") for suffix in _SIDE_FILES)):
        _tighten(candidate)
    return target
