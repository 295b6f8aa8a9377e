"""Quoting for the shell scripts the daemon runs on a login node (reads, writes, job scripts).

A path from a cluster profile may start with `~/` or `$VAR` (`$SCRATCH/relaymd`), which must
expand on the cluster; the rest of it, and every other value, is single-quoted, so no profile
or job value can inject shell code. Names that go into a script unquoted (allocation ids, file
names inside a mailbox) are checked instead.
"""

from __future__ import annotations

import re
import shlex

from relaymd.ids import is_allocation_id

_LEADING_VAR = re.compile(
    r"^\$(\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
_SAFE_NAME = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def quote(value: object) -> str:
    return shlex.quote(str(value))


def shell_path(path: str) -> str:
    """A shell word for `path`: a leading `~/` or `$VAR` expands, the rest is quoted."""
    if path == "~" or path.startswith("~/"):
        rest = path[1:]
        return '"$HOME"' + (shlex.quote(rest) if rest else "")
    match = _LEADING_VAR.match(path)
    if match:
        name = match["braced"] or match["plain"]
        rest = path[match.end() :]
        return f'"${{{name}}}"' + (shlex.quote(rest) if rest else "")
    return shlex.quote(path)


def check_alphanumeric(alloc_id: str) -> None:
    """Allocation ids are [0-9a-z] by construction (relaymd.ids; a GPU slot's ends in `-g<i>`);
    still never trusted raw."""
    if not is_allocation_id(alloc_id):
        raise ValueError(f"unsafe allocation id {alloc_id!r}")


def check_name(value: str, what: str) -> None:
    """A word safe to write unquoted: lowercase letters, digits, `.`, `_`, `-`, no leading dot."""
    if not value or not set(value.lower()) <= _SAFE_NAME or value.startswith("."):
        raise ValueError(f"unsafe {what} {value!r}")
