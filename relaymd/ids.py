"""Short, sortable, collision-resistant ids for jobs (`j…`) and allocations (`a…`).

Time-ordered so listings sort by creation; only [0-9a-z] so an id is safe in a SLURM job
name, a file name and an object key without quoting.
"""

from __future__ import annotations

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
