"""Verdicts of the chaos campaign, from outputs only: the bytes in the bucket, the workers'
events.jsonl on scratch, SLURM accounting. Nothing here reads RelayMD's state database.

* OpenMM: the state.xml of every `completed` checkpoint equals, byte for byte, the one of an
  uninterrupted run of the same inputs through the same worker code.
* Command (AToM-like): every replica's sample file uploaded by every `completed` segment holds
  the first N lines of an uninterrupted run of the same command, each exactly once and in
  order, N >= MAX_SAMPLES, and the slowest replica exactly MAX_SAMPLES (AToM's stop rule;
  duplicates and gaps counted with a line diff, so the check does not depend on the line
  format).
* Fencing: every resume (a `started` event naming a checkpoint) starts from a checkpoint that
  was reported by its own epoch before any later epoch of the job existed.
* Lost allocation time: sacct elapsed of every allocation minus the time its worker spent
  in a segment whose work was kept (started -> terminal event, or -> last checkpoint when
  the worker died without one).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel

from relaymd.mailbox.files import read_events, read_model
from relaymd.mailbox.layout import ASSIGNMENT_FILE, EVENTS_FILE
from relaymd.mailbox.models import Assignment, EventKind, WorkerEvent
from relaymd.models import (
    CheckpointManifest,
    CheckpointRef,
)
from relaymd.models.slurm_time import parse_slurm_time
from relaymd.storage.keys import manifest_key, outputs_prefix
from tests.testbed.testbed import Testbed, slurm

SAMPLE_FILES = "r*/*.out"  # AToM's per-replica sample files
TERMINAL = {EventKind.HANDOFF, EventKind.STOPPED, EventKind.COMPLETED, EventKind.FAILED}


class AllocRecord(BaseModel):
    cluster: str
    allocation_id: str
    events: list[WorkerEvent]
    assignment: Assignment | None  # the last one written to the folder


class SampleCheck(BaseModel):
    samples: int = 0  # reference lines compared
    duplicates: int = 0  # lines present more often than in the reference
    gaps: int = 0  # reference lines missing
    problems: list[str] = []


class LostTime(BaseModel):
    allocations: int
    allocated_s: float
    kept_s: float

    @property
    def lost_s(self) -> float:
        return max(0.0, self.allocated_s - self.kept_s)


class Bucket:
    """Read access to the run's bucket with plain boto3 (not RelayMD's store)."""

    def __init__(self, client: Any, name: str, key_prefix: str) -> None:
        self.client = client
        self.name = name
        self.key_prefix = key_prefix

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=self.key_prefix + prefix
        ):
            found += [item["Key"][len(self.key_prefix) :] for item in page.get("Contents", [])]
        return found

    def get(self, key: str) -> bytes:
        reply = self.client.get_object(Bucket=self.name, Key=self.key_prefix + key)
        return bytes(reply["Body"].read())

    def last_modified(self, key: str) -> datetime | None:
        try:
            head = self.client.head_object(Bucket=self.name, Key=self.key_prefix + key)
        except self.client.exceptions.ClientError:
            return None
        modified: datetime = head["LastModified"]
        return modified


def gather(tb: Testbed, run: str) -> list[AllocRecord]:
    """Every allocation folder of the run on both clusters, with its events."""
    records = []
    for c in tb.clusters:
        base = Path(c.scratch) / run / "alloc"
        if not base.is_dir():
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            events, _ = read_events(folder / EVENTS_FILE, 0)
            records.append(
                AllocRecord(
                    cluster=c.name,
                    allocation_id=folder.name,
                    events=events,
                    assignment=read_model(folder / ASSIGNMENT_FILE, Assignment),
                )
            )
    return records


def events_of(records: list[AllocRecord], job_id: str) -> list[WorkerEvent]:
    return sorted((e for r in records for e in r.events if e.job_id == job_id), key=lambda e: e.at)


def completed_events(records: list[AllocRecord], job_id: str) -> list[WorkerEvent]:
    return [e for e in events_of(records, job_id) if e.kind is EventKind.COMPLETED]


def read_checkpoint_file(bucket: Bucket, ref: CheckpointRef, path: str) -> bytes:
    """One file of a checkpoint, its manifest and content checked by sha256."""
    raw = bucket.get(manifest_key(ref.prefix))
    if hashlib.sha256(raw).hexdigest() != ref.manifest_sha256:
        raise ValueError(f"{ref.prefix}: manifest sha256 differs from the completed event's")
    manifest = CheckpointManifest.model_validate_json(raw)
    item = next((f for f in manifest.files if f.path == path), None)
    if item is None:
        raise ValueError(f"{ref.prefix}: no {path} in the manifest")
    data = bucket.get(ref.prefix + path)
    if hashlib.sha256(data).hexdigest() != item.sha256:
        raise ValueError(f"{ref.prefix}{path}: content sha256 differs from the manifest")
    return data


def check_openmm(
    bucket: Bucket, records: list[AllocRecord], job_id: str, total: int, reference: bytes
) -> list[str]:
    """Problems with an OpenMM job's result; empty when bitwise equal to the reference."""
    done = completed_events(records, job_id)
    if not done:
        return [f"{job_id}: no completed event"]
    problems = []
    for event in done:
        ref = event.checkpoint
        if ref is None or ref.step != total:
            problems.append(f"{job_id}: completed epoch {event.epoch} at {ref} not step {total}")
            continue
        try:
            state = read_checkpoint_file(bucket, ref, "state.xml")
        except Exception as exc:
            problems.append(f"{job_id}: {exc}")
            continue
        if state != reference:
            problems.append(
                f"{job_id}: final state.xml of epoch {event.epoch} differs from the"
                " uninterrupted run"
            )
    return problems


def diff_lines(reference: list[str], got: list[str]) -> tuple[int, int]:
    """(duplicated/extra lines, missing lines) of `got` against `reference`."""
    extra = missing = 0
    matcher = difflib.SequenceMatcher(None, reference, got, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("insert", "replace"):
            extra += j2 - j1
        if tag in ("delete", "replace"):
            missing += i2 - i1
    return extra, missing


def replica_diff(reference: list[str], got: list[str], target: int) -> tuple[int, int]:
    """(duplicated/extra lines, missing lines) of one replica's file against the
    uninterrupted run's lines, of which it must hold the first N (N >= `target`) in order.

    The reference runs past `target`: lines of it after the last one `got` reached are
    samples the relayed run did not need to compute, not gaps; lines before are.
    """
    extra = missing = 0
    matcher = difflib.SequenceMatcher(None, reference, got, autojunk=False)
    opcodes = matcher.get_opcodes()
    reached = max((i2 for tag, _, i2, _, _ in opcodes if tag == "equal"), default=0)
    needed = max(target, reached)
    for tag, i1, i2, j1, j2 in opcodes:
        if tag in ("insert", "replace"):
            extra += j2 - j1
        if tag in ("delete", "replace"):
            missing += max(0, min(i2, needed) - i1)
    return extra, missing


def judge_samples(
    job_id: str,
    epoch: int,
    reference: dict[str, list[str]],
    files: dict[str, list[str]],
    target: int,
) -> SampleCheck:
    """One completed segment's sample files by AToM's rule: every replica's file holds the
    uninterrupted run's first N lines (each once, in order), N >= MAX_SAMPLES (`target`), and
    the slowest replica exactly MAX_SAMPLES (the run stops when every replica has it; a
    faster replica may legitimately hold more after resumes)."""
    check = SampleCheck()
    counts = []
    for relpath, expected in sorted(reference.items()):
        got = files.get(relpath, [])
        extra, missing = replica_diff(expected, got, target)
        check.samples += len(got)
        check.duplicates += extra
        check.gaps += missing
        counts.append(len(got))
        if extra or missing:
            check.problems.append(
                f"{job_id}: {relpath} of epoch {epoch}: {len(got)} lines, {extra}"
                f" duplicated/extra, {missing} missing (uninterrupted run: {len(expected)}"
                f" lines, MAX_SAMPLES {target})"
            )
        elif len(got) == len(expected):
            check.problems.append(
                f"{job_id}: {relpath} of epoch {epoch}: all {len(got)} lines of the"
                " uninterrupted reference; raise chaos_jobs.REFERENCE_EXTRA to judge it"
            )
    unknown = sorted(set(files) - set(reference))
    if unknown:
        check.problems.append(
            f"{job_id}: epoch {epoch}: sample files not in the reference: {unknown}"
        )
    if counts and min(counts) != target:
        check.problems.append(
            f"{job_id}: epoch {epoch}: slowest replica has {min(counts)} samples, not"
            f" MAX_SAMPLES {target}"
        )
    return check


def check_samples(
    bucket: Bucket,
    records: list[AllocRecord],
    job_id: str,
    reference: dict[str, list[str]],
    target: int,
) -> SampleCheck:
    """The sample files each completed segment uploaded, judged by judge_samples."""
    check = SampleCheck()
    done = completed_events(records, job_id)
    if not done:
        check.problems.append(f"{job_id}: no completed event")
    for event in done:
        assert event.epoch is not None
        prefix = outputs_prefix(job_id, event.epoch)
        files = {
            key[len(prefix) :]: bucket.get(key).decode(errors="replace").splitlines()
            for key in bucket.keys(prefix)
            if PurePosixPath(key[len(prefix) :]).match(SAMPLE_FILES)
        }
        one = judge_samples(job_id, event.epoch, reference, files, target)
        check.samples += one.samples
        check.duplicates += one.duplicates
        check.gaps += one.gaps
        check.problems += one.problems
    return check


def check_fencing(
    records: list[AllocRecord], job_id: str, stored_at: Callable[[str], datetime | None]
) -> list[str]:
    """Resumes from a checkpoint of a stale epoch (or of no known epoch).

    `stored_at(manifest key)` is the bucket's time for a checkpoint no event reported.
    """
    events = events_of(records, job_id)
    # When each epoch came to exist: its assignment's issue time where the folder still holds
    # it, else its first event (a later bound, so the check can only be more lenient).
    # A pre-written successor's assignment (ADR 0009, `after_handoff`) is issued before its
    # predecessor's handoff checkpoint and runs only from it: its epoch is born at its first
    # event.
    born: dict[int, datetime] = {}
    for r in records:
        a = r.assignment
        if a is not None and a.job_id == job_id and a.after_handoff is None:
            born[a.epoch] = min(born.get(a.epoch, a.issued_at), a.issued_at)
    for e in events:
        if e.epoch is not None:
            born[e.epoch] = min(born.get(e.epoch, e.at), e.at)
    reported: dict[tuple[int, int], datetime] = {}
    for e in events:
        reports_own = e.checkpoint is not None and e.epoch == e.checkpoint.epoch
        if reports_own and e.kind is not EventKind.STARTED:
            assert e.checkpoint is not None
            key = (e.checkpoint.epoch, e.checkpoint.seq)
            reported[key] = min(reported.get(key, e.at), e.at)
    problems = []
    for e in events:
        if e.kind is not EventKind.STARTED or e.checkpoint is None or e.epoch is None:
            continue
        c = e.checkpoint
        where = f"{job_id}: epoch {e.epoch} resumed from checkpoint {c.epoch}-{c.seq}"
        if c.epoch >= e.epoch:
            problems.append(f"{where}, not of an earlier epoch")
            continue
        written = reported.get((c.epoch, c.seq)) or stored_at(manifest_key(c.prefix))
        if written is None:
            problems.append(f"{where}, which its epoch never reported and the bucket lacks")
            continue
        superseded = [t for epoch, t in born.items() if epoch > c.epoch]
        if superseded and written > min(superseded):
            problems.append(
                f"{where}, written at {written.isoformat()} after epoch {c.epoch} was"
                f" superseded at {min(superseded).isoformat()}"
            )
    return problems


def kept_seconds(events: list[WorkerEvent]) -> float:
    """Time of one allocation's worker spent in segments whose work was kept."""
    total = 0.0
    ordered = sorted(events, key=lambda e: e.at)
    for i, start in enumerate(ordered):
        if start.kind is not EventKind.STARTED:
            continue
        same = [e for e in ordered[i + 1 :] if e.epoch == start.epoch and e.job_id == start.job_id]
        end = next((e for e in same if e.kind in TERMINAL), None)
        if end is None:  # died without a word: only work up to its last checkpoint was kept
            end = next((e for e in reversed(same) if e.kind is EventKind.CHECKPOINT), None)
        if end is not None:
            total += max(0.0, (end.at - start.at).total_seconds())
    return total


def lost_time(tb: Testbed, records: list[AllocRecord], since: str) -> LostTime:
    """Allocated seconds (sacct elapsed of the run's allocations) vs seconds kept."""
    ours = {r.allocation_id: r for r in records}
    allocated = kept = 0.0
    count = 0
    for c in tb.clusters:
        out = slurm(
            tb, c.name, "sacct", "-a", "-X", "-n", "-P", "-o", "JobName,Elapsed", "-S", since
        )
        for line in out.splitlines():
            name, _, elapsed = line.partition("|")
            record = ours.get(name.removeprefix("relaymd-"))
            if record is None or record.cluster != c.name:
                continue
            count += 1
            allocated += parse_slurm_time(elapsed) * 60  # sacct's [D-]HH:MM:SS
            kept += kept_seconds(record.events)
    return LostTime(allocations=count, allocated_s=allocated, kept_s=kept)
