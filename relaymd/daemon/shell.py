"""Shell quoting for paths from cluster profiles.

A profile's scratch may start with `~` or an environment variable (`$SCRATCH/relaymd`), which
must expand on the cluster; everything else is quoted so no profile value can inject code.
"""

from __future__ import annotations

import re
import shlex

_LEADING_VAR = re.compile(
    r"^\$(\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


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


def alloc_folder(scratch: str, allocation_id: str) -> str:
    """`<scratch>/alloc/<allocation_id>` as the scheduler and worker see it (unexpanded)."""
    return f"{scratch.rstrip('/')}/alloc/{allocation_id}"
