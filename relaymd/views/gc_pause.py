"""Pause Python's cyclic garbage collector while a view is built.

A snapshot or page of 20 000 segments allocates a few hundred thousand short-lived, acyclic
objects (models, datetimes, strings); every 700 allocations the collector scans the young
generation and often the whole growing heap, which cost about a quarter of `relaymd report`.
Reference counting still frees everything; the collector resumes (and catches up) after."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside; nested use leaves it to the outermost."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
