"""The batched read/write scripts, run by a real bash against a real folder tree."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from relaymd.mailbox.carrier import FileWrite, ReadRequest
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.mailbox.scratch_read import build_read_script, parse_read_output
from relaymd.mailbox.scratch_write import (
    SubmitCommand,
    WritePlan,
    build_write_script,
    parse_write_output,
)
from relaymd.mailbox.shell import shell_path
from tests.support.fake_cluster import parse_queue, parse_submitted


def bash(script: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["bash", "-s"],
        input=script,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=30,
    )
    return proc.stdout


def event_line(kind: EventKind, alloc: str = "a1") -> bytes:
    return (
        WorkerEvent(kind=kind, allocation_id=alloc, job_id="j1", epoch=1).model_dump_json().encode()
        + b"\n"
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    root = tmp_path / "scratch with 'quotes' $HOME"
    folder = root / "alloc" / "a1"
    folder.mkdir(parents=True)
    beat = Heartbeat(allocation_id="a1", seq=7, state=WorkerState.IDLE)
    (folder / "heartbeat.json").write_text(beat.model_dump_json())
    (folder / "events.jsonl").write_bytes(
        event_line(EventKind.STARTED) + event_line(EventKind.HANDOFF) + b'{"kind": "comp'
    )
    (folder / "worker.log").write_text("\n".join(f"line {i}" for i in range(100)) + "\n")
    (root / "alloc" / "a2").mkdir()
    (root / "alloc" / "a2" / "heartbeat.json").write_text('{"allocation_id": "a2", "seq"')
    return root


def read(scratch: Path, requests: list[ReadRequest], query: str = "echo 'a1 101 running'"):
    script, token = build_read_script(str(scratch), query, requests)
    return parse_read_output(bash(script), token, "c1", requests, parse_queue)


def test_read_collects_query_heartbeats_and_new_complete_events(scratch: Path) -> None:
    reqs = [
        ReadRequest(allocation_id="a1", events_offset=0, want_log=True),
        ReadRequest(allocation_id="a2"),
        ReadRequest(allocation_id="a3"),  # folder missing: no news, not an error
    ]
    snap = read(scratch, reqs)
    assert snap.query_ok and snap.scheduler_jobs["a1"].scheduler_id == "101"
    a1 = snap.files["a1"]
    assert a1.heartbeat is not None and a1.heartbeat.seq == 7
    assert [e.kind for e in a1.events] == [EventKind.STARTED, EventKind.HANDOFF]
    complete = len(event_line(EventKind.STARTED)) + len(event_line(EventKind.HANDOFF))
    assert a1.events_offset == complete  # the partial line waits
    assert a1.log_tail is not None and a1.log_tail[-1] == "line 99"
    assert snap.files["a2"].heartbeat is None  # half-written: no news
    assert snap.files["a3"].heartbeat is None and snap.files["a3"].events == []
    assert snap.files["a2"].log_tail is None

    # Catch up from the stored offset once the line is complete.
    with open(scratch / "alloc" / "a1" / "events.jsonl", "ab") as fh:
        fh.write(b'pleted"}\n' + event_line(EventKind.COMPLETED))
    snap = read(scratch, [ReadRequest(allocation_id="a1", events_offset=complete)])
    assert [e.kind for e in snap.files["a1"].events] == [EventKind.COMPLETED]


def test_failed_query_is_reported(scratch: Path) -> None:
    snap = read(scratch, [ReadRequest(allocation_id="a1")], query="echo oops >&2; exit 3")
    assert not snap.query_ok and "oops" in snap.query_error
    assert snap.files["a1"].heartbeat is not None


def test_scratch_with_variable_expands_on_the_cluster(scratch: Path) -> None:
    script, token = build_read_script("$MYSCRATCH", "true", [ReadRequest(allocation_id="a1")])
    snap = parse_read_output(
        bash(script, {"MYSCRATCH": str(scratch)}),
        token,
        "c1",
        [ReadRequest(allocation_id="a1")],
        parse_queue,
    )
    assert snap.files["a1"].heartbeat is not None
    assert shell_path("~/x y") == "\"$HOME\"'/x y'"


def test_write_creates_private_folders_atomic_files_then_submits(tmp_path: Path) -> None:
    evil = b"$(touch PWNED) `touch PWNED2` '; rm -rf / #"
    plan = WritePlan(
        mkdirs=["a9"],
        files=[
            FileWrite(
                allocation_id="a9", name="credentials", data=b'{"secret": "s3cr3t"}', mode=0o600
            ),
            FileWrite(allocation_id="a9", name="job.sh", data=evil, mode=0o700),
            FileWrite(allocation_id="a9", name="assignment.json", data=b"{}", mode=0o600),
        ],
        submits=[SubmitCommand(allocation_id="a9", snippet="echo SUBMITTED a9 555")],
        cancel_snippet="echo cancelled 1 2",
    )
    script, token = build_write_script(str(tmp_path), plan)
    assert "s3cr3t" not in script  # base64 only
    out = bash(script)
    result = parse_write_output(out, token, plan, parse_submitted)
    assert result.complete and not result.failed_files
    assert result.submits["a9"].scheduler_id == "555"
    assert result.cancel_rc == 0 and "cancelled 1 2" in result.cancel_output
    folder = tmp_path / "alloc" / "a9"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "credentials").stat().st_mode) == 0o600
    assert (folder / "credentials").read_bytes() == b'{"secret": "s3cr3t"}'
    assert (folder / "job.sh").read_bytes() == evil
    assert sorted(p.name for p in folder.iterdir()) == ["assignment.json", "credentials", "job.sh"]
    assert not list(tmp_path.rglob("PWNED*")) and not (Path.cwd() / "PWNED").exists()


def test_no_submit_when_the_folder_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "alloc").mkdir()
    (tmp_path / "alloc" / "a9").write_text("a file where the folder should be")
    plan = WritePlan(
        mkdirs=["a9"],
        files=[FileWrite(allocation_id="a9", name="credentials", data=b"x")],
        submits=[SubmitCommand(allocation_id="a9", snippet="echo SUBMITTED a9 555")],
    )
    script, token = build_write_script(str(tmp_path), plan)
    result = parse_write_output(bash(script), token, plan, parse_submitted)
    assert result.complete and result.submits == {}
    assert ("a9", "credentials") in result.failed_files


@pytest.mark.parametrize("name", ["../x", ".hidden", "a b", "x;rm", ""])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    plan = WritePlan(files=[FileWrite(allocation_id="a1", name=name, data=b"")])
    with pytest.raises(ValueError, match="unsafe"):
        build_write_script(str(tmp_path), plan)
