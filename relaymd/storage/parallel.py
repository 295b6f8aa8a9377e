"""Independent storage requests at once: each costs a round trip (~150 ms on B2), so a
checkpoint of five files costs one round trip instead of five. Bounded, so a checkpoint of
many files cannot open a connection per file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

A = TypeVar("A")
R = TypeVar("R")

# Requests in flight per call; S3Store's connection pool is sized above this.
STORAGE_CONCURRENCY = 8


def each(fn: Callable[[A], R], items: Sequence[A], limit: int = STORAGE_CONCURRENCY) -> list[R]:
    """`[fn(item) for item in items]`, up to `limit` at a time, results in item order.

    Every call runs to its end (no half-finished request is left behind); then the first
    failure in item order is raised, so the error a caller sees does not depend on timing.
    """
    if len(items) <= 1 or limit <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(
        max_workers=min(limit, len(items)), thread_name_prefix="storage"
    ) as pool:
        futures: list[Future[R]] = [pool.submit(fn, item) for item in items]
    return [future.result() for future in futures]
