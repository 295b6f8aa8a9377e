"""Checks of every value that reaches a job script's `#SBATCH` lines or a scheduler command.

Shell quoting itself is relaymd.mailbox.shell, beside the scripts that use it. `#SBATCH`
values are not shell at all: sbatch splits them on whitespace, so they must be one token with
no line breaks or quotes (else a value could add options such as `--uid`).
"""

from __future__ import annotations

import re

from relaymd.ids import is_allocation_id
from relaymd.models.cluster import SBATCH_TOKEN

_SBATCH_TOKEN = SBATCH_TOKEN  # one rule: the profile's validation refuses the same values
_SCHEDULER_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")


class UnsafeValue(ValueError):
    """A profile or job value that cannot be put into a job script safely."""


def is_literal_path(path: str) -> bool:
    """True when the path needs no expansion on the cluster (usable in `#SBATCH` lines)."""
    return path.startswith("/") and "$" not in path and _SBATCH_TOKEN.match(path) is not None


def sbatch_value(field: str, value: object) -> str:
    """One `#SBATCH` token, or UnsafeValue naming the field."""
    text = str(value)
    if not _SBATCH_TOKEN.match(text):
        raise UnsafeValue(
            f"{field} {text!r} cannot go into an #SBATCH line: use one word without spaces,"
            " quotes, backslashes, backticks or line breaks"
        )
    return text


def sbatch_option(field: str, line: str) -> str:
    """A whole extra `#SBATCH` option from a profile, e.g. `--mail-type=END`."""
    text = sbatch_value(field, line)
    if not text.startswith("-"):
        raise UnsafeValue(f"{field} {text!r} must be an sbatch option starting with `-`")
    return text


def scheduler_id(value: str) -> str:
    """A SLURM job id (or a pid for the direct scheduler): digits only, never raw text."""
    if not _SCHEDULER_ID.match(value):
        raise UnsafeValue(f"scheduler job id {value!r} is not a number")
    return value


def allocation_id(value: str) -> str:
    # relaymd.ids makes [0-9a-z] ids (`<group>-g<i>` for a GPU slot); nothing else is ours.
    if not is_allocation_id(value):
        raise UnsafeValue(f"allocation id {value!r} is not alphanumeric")
    return value
