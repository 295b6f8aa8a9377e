"""Waiting on a condition (a file, an event, a process state), never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(check: Callable[[], T | None], timeout_s: float, every_s: float = 0.5) -> T | None:
    """`check()`'s first truthy value within `timeout_s`, else None (checked once more at the
    deadline, so a slow machine's last look still counts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(every_s)
