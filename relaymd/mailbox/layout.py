"""Where an allocation's mailbox is and what its files are called.

On shared scratch every allocation has `<scratch>/alloc/<allocation_id>/`; the file names
are the same for every carrier of the protocol (docs/architecture.md, "The mailbox protocol").
"""

from __future__ import annotations

ASSIGNMENT_FILE = "assignment.json"  # daemon writes
CONTROL_FILE = "control.json"  # daemon writes
CREDENTIALS_FILE = "credentials"  # daemon writes, mode 0600
HEARTBEAT_FILE = "heartbeat.json"  # worker writes
EVENTS_FILE = "events.jsonl"  # worker appends
WORKER_LOG_FILE = "worker.log"  # worker writes, the daemon tails it


def alloc_root(scratch: str) -> str:
    """`<scratch>/alloc`, where every allocation's mailbox folder is; unexpanded."""
    return f"{scratch.rstrip('/')}/alloc"


def alloc_dir(scratch: str, allocation_id: str) -> str:
    """`<scratch>/alloc/<allocation_id>`, unexpanded (as the daemon writes it)."""
    return f"{alloc_root(scratch)}/{allocation_id}"


# Object storage has no shared folder: every allocation's mailbox is a key prefix in the job
# bucket (the storage carrier, ADR 0022).
STORAGE_MAILBOX_ROOT = "mailbox/"


def storage_mailbox_key(allocation_id: str, name: str) -> str:
    """`mailbox/<allocation_id>/<name>`, relative to the job store's root."""
    return f"{STORAGE_MAILBOX_ROOT}{allocation_id}/{name}"
