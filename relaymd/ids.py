"""Short, sortable, collision-resistant ids for jobs (`j…`) and allocations (`a…`).

Time-ordered so listings sort by creation; only [0-9a-z] (plus the `-g` of a GPU slot) so an
id is safe in a SLURM job name, a file name and an object key without quoting.
"""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def _new(prefix: str) -> str:
    millis = time.time_ns() // 1_000_000
    return prefix + _encode(millis, 9) + _encode(secrets.randbits(30), 6)


def new_job_id() -> str:
    return _new("j")


def new_allocation_id() -> str:
    return _new("a")


# GPU slots (ADR 0026): slot i of a multi-GPU group is the row `<group>-g<i>`; the `-g`
# separator is the only character outside [0-9a-z] an allocation id may carry.
SLOT_SEPARATOR = "-g"
_ALLOCATION_ID = re.compile(r"^[0-9A-Za-z]+(-g[0-9]{1,3})?$")


def slot_allocation_id(group_id: str, slot: int) -> str:
    return f"{group_id}{SLOT_SEPARATOR}{slot}"


def is_allocation_id(value: str) -> bool:
    """An id this module could have made: alphanumeric, or a group's slot `<group>-g<i>`."""
    return bool(value) and value.isascii() and _ALLOCATION_ID.match(value) is not None


def group_of(allocation_id: str) -> str:
    """The id the scheduler knows for an allocation row (its group's, for a slot)."""
    head, sep, tail = allocation_id.rpartition(SLOT_SEPARATOR)
    return head if sep and head and tail.isdigit() else allocation_id
