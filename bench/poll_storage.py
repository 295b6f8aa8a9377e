"""Storage requests per poll for workers without shared scratch (the storage carrier,
ADR 0022), at 10, 100 and 1 000 workers, and what they cost a month on Backblaze B2.

The daemon's side is the real StorageCarrier reading a real store (file://, its LISTs counted
as S3 pages them: one request per 1 000 keys; tests/integration/test_storage_carrier.py
checks the same counts on the wire against moto). Each simulated poll period every worker
rewrites its heartbeat (heartbeat interval = poll interval) and a share of them append an
event. The worker's side is the real MailboxMirror over a store that counts its calls.

    uv run python -m bench.poll_storage [--workers 10 100 1000] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import cast

from pydantic import BaseModel

from relaymd.mailbox.carrier import ReadRequest
from relaymd.mailbox.layout import storage_mailbox_key
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.mailbox.reading import HeartbeatMemo
from relaymd.mailbox.storage_carrier import RequestCount, StorageCarrier
from relaymd.models import ObjectRef
from relaymd.storage import FileStore, ObjectStore
from worker_entry.remote_mailbox import MailboxMirror

POLL_S = 30.0
MAILBOX_POLLS_S = (10.0, 30.0)  # the worker's --mailbox-poll: its default, and = POLL_S
EVENT_SHARE = 0.1  # workers with a new event in a poll (a checkpoint every 5 min)
CYCLES = 4  # steady-state polls measured after the first
POLLS_PER_MONTH = 30 * 86400 / POLL_S
# Backblaze B2, https://www.backblaze.com/b2/b2-transactions-price.html (looked up 2026-12):
# Class A (PutObject, DeleteObject) free; Class B (GetObject, HeadObject) $0.004 per 10 000;
# Class C (ListObjects) $0.004 per 1 000; each class's first 2 500 calls a day are free.
CLASS_B_USD, CLASS_C_USD = 0.004 / 10_000, 0.004 / 1_000
FREE_PER_DAY = 2_500


class Row(BaseModel):
    workers: int
    mailbox_poll_s: float
    daemon: RequestCount  # per poll, steady state
    worker_gets: int  # all workers' GETs per poll period
    worker_puts: int
    usd_month: float


def _beat(alloc_id: str, seq: int) -> bytes:
    beat = Heartbeat(allocation_id=alloc_id, seq=seq, state=WorkerState.RUNNING, step=seq)
    return beat.model_dump_json().encode()


def _event(alloc_id: str, step: int) -> bytes:
    event = WorkerEvent(kind=EventKind.CHECKPOINT, allocation_id=alloc_id, job_id="j", step=step)
    return event.model_dump_json().encode() + b"\n"


def _populate(store: ObjectStore, ids: list[str]) -> None:
    """What a daemon and its workers leave in the bucket: six objects per mailbox."""
    for alloc_id in ids:
        for name in ("assignment.json", "control.json", "credentials", "worker.log"):
            store.put_bytes(storage_mailbox_key(alloc_id, name), b"{}")
        store.put_bytes(storage_mailbox_key(alloc_id, "heartbeat.json"), _beat(alloc_id, 0))
        store.put_bytes(storage_mailbox_key(alloc_id, "events.jsonl"), b"")


def daemon_requests(root: Path, workers: int) -> RequestCount:
    """Steady-state requests of one daemon poll of `workers` mailboxes."""
    store = FileStore(root)
    ids = [f"w{i:05d}" for i in range(workers)]
    _populate(store, ids)
    carrier = StorageCarrier(store, HeartbeatMemo())
    offsets = dict.fromkeys(ids, 0)
    events: dict[str, bytes] = dict.fromkeys(ids, b"")
    asyncio.run(carrier.read([ReadRequest(allocation_id=a) for a in ids]))  # warms the memo
    total = RequestCount()
    for cycle in range(1, CYCLES + 1):
        for index, alloc_id in enumerate(ids):
            store.put_bytes(storage_mailbox_key(alloc_id, "heartbeat.json"), _beat(alloc_id, cycle))
            if (index + cycle) % round(1 / EVENT_SHARE) == 0:
                events[alloc_id] += _event(alloc_id, cycle)
                store.put_bytes(storage_mailbox_key(alloc_id, "events.jsonl"), events[alloc_id])
        requests = [ReadRequest(allocation_id=a, events_offset=offsets[a]) for a in ids]
        read = asyncio.run(carrier.read(requests))
        offsets = {a: read.files[a].events_offset for a in ids}
        for kind in ("list", "get", "put", "delete"):
            setattr(total, kind, getattr(total, kind) + getattr(carrier.last_requests, kind))
    return RequestCount(
        list=round(total.list / CYCLES), get=round(total.get / CYCLES), delete=0, put=0
    )


class _CountingStore:
    """The two calls a MailboxMirror makes, counted, on top of a real store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store, self.gets, self.puts = store, 0, 0

    def get_bytes(self, key: str) -> bytes:
        self.gets += 1
        return self.store.get_bytes(key)

    def put_bytes(self, key: str, data: bytes) -> ObjectRef:
        self.puts += 1
        return self.store.put_bytes(key, data)


def worker_requests(root: Path, mailbox_poll_s: float) -> tuple[int, int]:
    """One worker's GETs and PUTs per poll period, in steady state (credentials held)."""
    real = FileStore(root / "bucket")
    for name in ("assignment.json", "credentials"):
        real.put_bytes(name, b"{}")
    local = root / "local" / "w1"
    local.mkdir(parents=True)
    counting = _CountingStore(real)
    mirror = MailboxMirror(cast(ObjectStore, counting), local, mailbox_poll_s)
    mirror.pull()
    counting.gets = 0
    pulls = round(POLL_S / mailbox_poll_s)
    for seq in range(1, pulls + 1):
        (local / "worker.log").write_bytes(b"log line\n" * seq)  # it logs between pulls
        if seq == pulls:
            (local / "heartbeat.json").write_bytes(_beat("w1", seq))
        mirror.push()
        mirror.pull()
    return counting.gets, counting.puts


def _month_usd(lists: int, gets: int) -> float:
    """Monthly B2 cost of `lists` Class C and `gets` Class B requests per poll."""
    per_day = 86400 / POLL_S
    billable_c = max(0.0, lists * per_day - FREE_PER_DAY) * 30
    billable_b = max(0.0, gets * per_day - FREE_PER_DAY) * 30
    return billable_c * CLASS_C_USD + billable_b * CLASS_B_USD


def measure(counts: list[int]) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="relaymd-poll-storage-") as tmp:
        per_worker = {
            poll: worker_requests(Path(tmp) / f"worker-{poll:.0f}", poll)
            for poll in MAILBOX_POLLS_S
        }
        for workers in counts:
            daemon = daemon_requests(Path(tmp) / f"daemon-{workers}", workers)
            for poll, (gets, puts) in per_worker.items():
                usd = _month_usd(daemon.list, daemon.get + gets * workers)
                row = Row(
                    workers=workers,
                    mailbox_poll_s=poll,
                    daemon=daemon,
                    worker_gets=gets * workers,
                    worker_puts=puts * workers,
                    usd_month=usd,
                )
                rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "## Storage requests per poll, workers without shared scratch (`bench/poll_storage.py`)",
        "",
        f"Poll and heartbeat every {POLL_S:.0f} s, {EVENT_SHARE:.0%} of workers with a new "
        "event per poll, the worker's `--mailbox-poll` at its default (10 s) and at 30 s. "
        "Daemon: the real StorageCarrier (LIST counted as S3 pages it, 1 000 keys a request; "
        "six objects per mailbox). Workers: the real MailboxMirror. Counts, not times. "
        "Cost: Backblaze B2's published prices (Class B GET $0.004 per 10 000, Class C LIST "
        "$0.004 per 1 000, PUT/DELETE free, 2 500 free a day per class), 30-day month.",
        "",
        "| workers | --mailbox-poll | daemon LIST / poll | daemon GET / poll "
        "| workers' GET / poll | workers' PUT / poll (free) | B2 USD / month |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.workers} | {row.mailbox_poll_s:.0f} s | {row.daemon.list} "
            f"| {row.daemon.get} | {row.worker_gets} "
            f"| {row.worker_puts} | {row.usd_month:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    body = table(measure(args.workers))
    print(body)
    if args.write_docs:
        from bench._docs import write_section

        write_section("poll_storage", body)


if __name__ == "__main__":
    main()
