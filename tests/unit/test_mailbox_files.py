"""Mailbox helpers: atomic JSON files and the append-only event log."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymd.mailbox.files import (
    append_event,
    atomic_write_bytes,
    atomic_write_model,
    parse_events,
    read_events,
    read_model,
)
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState


def _heartbeat(seq: int) -> Heartbeat:
    return Heartbeat(allocation_id="a1", seq=seq, state=WorkerState.RUNNING, job_id="j1")


def _event(kind: EventKind, step: int) -> WorkerEvent:
    return WorkerEvent(kind=kind, allocation_id="a1", job_id="j1", epoch=1, step=step)


def test_atomic_write_model_round_trip_and_mode(tmp_path: Path) -> None:
    box = tmp_path / "alloc"
    box.mkdir()
    path = box / "heartbeat.json"
    atomic_write_model(path, _heartbeat(3))
    atomic_write_model(path, _heartbeat(4), mode=0o600)
    got = read_model(path, Heartbeat)
    assert got is not None and got.seq == 4
    assert path.stat().st_mode & 0o777 == 0o600
    # No temp files left next to it.
    assert [p.name for p in box.iterdir()] == ["heartbeat.json"]


def test_read_model_tolerates_missing_empty_half_written_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.json"
    assert read_model(path, Heartbeat) is None
    path.write_bytes(b"")
    assert read_model(path, Heartbeat) is None
    whole = _heartbeat(7).model_dump_json().encode()
    path.write_bytes(whole[: len(whole) // 2])
    assert read_model(path, Heartbeat) is None
    path.write_bytes(b'{"allocation_id": "a1"}')  # valid JSON, missing required fields
    assert read_model(path, Heartbeat) is None
    path.write_bytes(b"\xff\xfe not json")
    assert read_model(path, Heartbeat) is None
    (tmp_path / "dir.json").mkdir()
    assert read_model(tmp_path / "dir.json", Heartbeat) is None
    path.write_bytes(whole)
    got = read_model(path, Heartbeat)
    assert got is not None and got.seq == 7


def test_atomic_write_failure_leaves_old_content_and_no_temp(tmp_path: Path) -> None:
    box = tmp_path / "alloc"
    box.mkdir()
    path = box / "control.json"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]  # fails mid-write
    assert path.read_bytes() == b"old"
    assert [p.name for p in box.iterdir()] == ["control.json"]


def test_events_append_and_catch_up_from_offset(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    assert read_events(path, 0) == ([], 0)
    append_event(path, _event(EventKind.STARTED, 0))
    append_event(path, _event(EventKind.CHECKPOINT, 100))
    events, offset = read_events(path, 0)
    assert [e.kind for e in events] == [EventKind.STARTED, EventKind.CHECKPOINT]
    assert offset == path.stat().st_size
    assert read_events(path, offset) == ([], offset)
    append_event(path, _event(EventKind.HANDOFF, 200))
    events, offset2 = read_events(path, offset)
    assert [(e.kind, e.step) for e in events] == [(EventKind.HANDOFF, 200)]
    assert offset2 == path.stat().st_size


def test_partial_trailing_line_is_kept_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append_event(path, _event(EventKind.STARTED, 0))
    line = _event(EventKind.COMPLETED, 500).model_dump_json().encode() + b"\n"
    with open(path, "ab") as fh:
        fh.write(line[:10])  # a writer caught mid-line
    events, offset = read_events(path, 0)
    assert [e.kind for e in events] == [EventKind.STARTED]
    assert offset == path.stat().st_size - 10
    with open(path, "ab") as fh:
        fh.write(line[10:])
    events, offset = read_events(path, offset)
    assert [(e.kind, e.step) for e in events] == [(EventKind.COMPLETED, 500)]
    assert offset == path.stat().st_size


def test_parse_events_skips_garbage_lines_and_counts_bytes() -> None:
    good = _event(EventKind.CHECKPOINT, 10).model_dump_json().encode()
    data = b"not json\n" + good + b"\n\n" + b'{"kind": "nope"}\n' + good[:5]
    events, offset = parse_events(data, 1000)
    assert [e.step for e in events] == [10]
    assert offset == 1000 + len(data) - 5
    assert parse_events(b"partial", 42) == ([], 42)
    # A newer worker's unknown fields are ignored, not fatal.
    newer = good[:-1] + b', "future_field": 1}\n'
    events, _ = parse_events(newer, 0)
    assert len(events) == 1
