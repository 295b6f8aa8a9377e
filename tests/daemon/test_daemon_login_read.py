"""The login-node side of the batched read (ADR 0012), run by a real bash against real folders:
counts of processes and of records returned, never times."""

from __future__ import annotations

import base64
import os
import shutil
import zlib
from pathlib import Path

import pytest

from bench import login_node
from relaymd.mailbox.carrier import ReadRequest
from relaymd.mailbox.reading import EVENTS_WINDOW_BYTES, HeartbeatMemo
from relaymd.mailbox.scratch_read import (
    build_read_script,
    parse_login_records,
    parse_read_output,
)

needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")


@needs_strace
def test_processes_per_poll_do_not_grow_with_allocations(tmp_path: Path) -> None:
    small = login_node.LoginNodeTree(10, root=tmp_path / "small")
    large = login_node.LoginNodeTree(200, root=tmp_path / "large")
    _, small_cost = small.poll()
    _, large_cost = large.poll()
    assert small_cost.processes == large_cost.processes <= 10
    # The bash fallback (no python3 on the login node) spawns per folder: the contrast.
    _, fallback = small.poll(python=False)
    assert fallback.processes > 10


def test_a_quiet_poll_returns_the_same_few_bytes_at_any_size(tmp_path: Path) -> None:
    sizes = []
    for n in (10, 200):
        tree = login_node.LoginNodeTree(n, root=tmp_path / str(n))
        _, first = tree.poll(count=False)
        _, quiet = tree.poll(count=False)
        assert quiet.returned_bytes < first.returned_bytes
        sizes.append(quiet.returned_bytes)
    assert sizes[0] == sizes[1]


def test_a_poll_returns_exactly_the_heartbeats_and_events_that_changed(tmp_path: Path) -> None:
    tree = login_node.LoginNodeTree(200, root=tmp_path)
    tree.poll(count=False)
    _, quiet = tree.poll(count=False)
    moved = tree.ids[:7]
    for alloc_id in moved:
        tree.beat(alloc_id)
    tree.append_event(tree.ids[100])
    requests = tree.requests()
    script, token = build_read_script(str(tree.root), "true", requests, memo=tree.memo)
    env = {"PATH": login_node.login_path(tree.root, python=True)}
    out = login_node.subprocess.run(
        ["/bin/bash", "-s"], input=script, capture_output=True, text=True, env=env, check=True
    ).stdout
    blob = out.split(f"@@{token} PY\n", 1)[1].split("\n", 1)[0]
    records = parse_login_records(blob, requests)
    assert records is not None
    assert sorted(records.heartbeats) == moved
    assert list(records.events) == [tree.ids[100]]
    heartbeat_bytes = sum(len(data) for _, data in records.heartbeats.values())
    assert len(out) - quiet.returned_bytes < heartbeat_bytes + 4096
    snapshot = parse_read_output(out, token, "c1", requests, lambda _t: [], tree.memo)
    for alloc_id in tree.ids:
        beat = snapshot.files[alloc_id].heartbeat
        assert beat is not None and beat.seq == tree.seq[alloc_id]
    assert len(snapshot.files[tree.ids[100]].events) == 1


def test_a_heartbeat_left_out_as_unchanged_keeps_its_seq(tmp_path: Path) -> None:
    tree = login_node.LoginNodeTree(3, root=tmp_path)
    first, _ = tree.poll(count=False)
    again, _ = tree.poll(count=False)
    for alloc_id in tree.ids:
        before, after = first.files[alloc_id].heartbeat, again.files[alloc_id].heartbeat
        assert before is not None and after is not None
        assert after.seq == before.seq == tree.seq[alloc_id]  # liveness sees no movement


def test_an_allocation_that_brought_nothing_new_gets_its_last_files_back(
    tmp_path: Path,
) -> None:
    """The quiet case reuses the last AllocationFiles (ADR 0030); anything new (a moved
    heartbeat, an event, a log tail, a moved offset) builds new ones, equal to what a read
    without the memo's reuse gives."""
    tree = login_node.LoginNodeTree(4, root=tmp_path)
    first, _ = tree.poll(count=False)
    quiet, _ = tree.poll(count=False)
    assert all(quiet.files[a] is first.files[a] for a in tree.ids)
    beaten, evented, logged, still = tree.ids
    tree.beat(beaten)
    tree.append_event(evented)
    requests = tree.requests()
    requests[2] = requests[2].model_copy(update={"want_log": True})
    script, token = build_read_script(str(tree.root), "true", requests, memo=tree.memo)
    env = {"PATH": login_node.login_path(tree.root, python=True)}
    out = login_node.subprocess.run(
        ["/bin/bash", "-s"], input=script, capture_output=True, text=True, env=env, check=True
    ).stdout
    news = parse_read_output(out, token, "c1", requests, lambda _t: [], tree.memo)
    assert news.files[still] is first.files[still]
    for alloc_id in (beaten, evented, logged):
        assert news.files[alloc_id] is not first.files[alloc_id]
    seen = news.files[beaten].heartbeat
    assert seen is not None and seen.seq == tree.seq[beaten]
    assert len(news.files[evented].events) == 1
    assert news.files[logged].log_tail
    # The event's window moved the offset: the next quiet read is new files at the new
    # offset, then that one is reused.
    tree.offsets[evented] = news.files[evented].events_offset
    after, _ = tree.poll(count=False)
    again, _ = tree.poll(count=False)
    assert after.files[evented] is not news.files[evented]
    assert after.files[evented].events == [] and not after.files[evented].log_tail
    assert again.files[evented] is after.files[evented]
    assert again.files[beaten] is news.files[beaten]
    # Whatever was reused equals a read whose memo has only the heartbeats (no kept files).
    fresh = HeartbeatMemo()
    fresh.seen = dict(tree.memo.seen)
    requests = tree.requests()
    script, token = build_read_script(str(tree.root), "true", requests, memo=fresh)
    out = login_node.subprocess.run(
        ["/bin/bash", "-s"], input=script, capture_output=True, text=True, env=env, check=True
    ).stdout
    rebuilt = parse_read_output(out, token, "c1", requests, lambda _t: [], fresh)
    for alloc_id in tree.ids:
        assert rebuilt.files[alloc_id] is not again.files[alloc_id]
        assert rebuilt.files[alloc_id] == again.files[alloc_id]
    tree.memo.keep_only({still})
    assert set(tree.memo.quiet) == set(tree.memo.seen) == {still}


def test_a_rewrite_with_the_same_size_and_mtime_is_seen(tmp_path: Path) -> None:
    """What an NFS client with a cached attribute would show: the content decides."""
    tree = login_node.LoginNodeTree(2, root=tmp_path)
    tree.poll(count=False)
    path = tree.folder(tree.ids[0]) / "heartbeat.json"
    stat = path.stat()
    text = path.read_text()
    seq = tree.seq[tree.ids[0]]
    rewritten = text.replace(f'"seq":{seq},', f'"seq":{seq + 1},', 1)
    assert seq + 1 < 10 and len(rewritten) == len(text) and rewritten != text
    path.write_text(rewritten)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    snapshot, _ = tree.poll(count=False)
    beat = snapshot.files[tree.ids[0]].heartbeat
    assert beat is not None and beat.seq == seq + 1


def test_without_python3_the_bash_fallback_answers_the_same(tmp_path: Path) -> None:
    tree = login_node.LoginNodeTree(3, root=tmp_path / "scratch with 'quotes' $HOME")
    events = tree.folder(tree.ids[1]) / "events.jsonl"
    with open(events, "ab") as fh:  # an oversized line, then a good one
        fh.write(b"x" * (EVENTS_WINDOW_BYTES + 10) + b"\n")
    tree.append_event(tree.ids[1])
    tree.append_event(tree.ids[2])
    (tree.folder(tree.ids[2]) / "heartbeat.json").write_text('{"allocation_id": "a0')
    answers = []
    for python in (True, False):
        offsets = dict(tree.offsets)
        log_requests = [
            ReadRequest(allocation_id=a, events_offset=offsets[a], want_log=True) for a in tree.ids
        ]
        polls = []
        for _ in range(3):  # start the skip, finish it, read the event after it
            script, token = build_read_script(str(tree.root), "true", log_requests)
            env = {"PATH": login_node.login_path(tree.root, python=python)}
            out = login_node.subprocess.run(
                ["/bin/bash", "-s"], input=script, capture_output=True, text=True, env=env
            ).stdout
            assert (f"@@{token} PY" in out) is python
            snap = parse_read_output(out, token, "c1", log_requests, lambda _t: [])
            polls.append({a: f.model_dump() for a, f in snap.files.items()})
            log_requests = [
                ReadRequest(
                    allocation_id=a,
                    events_offset=f.events_offset,
                    skipping=f.events_skipping,
                    want_log=True,
                )
                for a, f in snap.files.items()
            ]
        answers.append(polls)
    assert answers[0] == answers[1]
    last = answers[0][-1][tree.ids[1]]
    assert last["events_offset"] == events.stat().st_size and len(last["events"]) == 1
    assert answers[0][0][tree.ids[2]]["heartbeat"] is None  # half-written: no news


def test_program_output_that_is_garbled_or_too_big_is_refused() -> None:
    asks = [ReadRequest(allocation_id="a1")]

    def blob(body: bytes) -> str:
        return base64.b64encode(zlib.compress(body)).decode()

    assert parse_login_records(blob(b"HB a1 - 0\n\nEND\n"), asks) is not None
    assert parse_login_records(blob(b"HB a9 - 0\n\nEND\n"), asks) is None  # nobody asked
    assert parse_login_records(blob(b"HB a1 - 0\n\n"), asks) is None  # no END: cut short
    assert parse_login_records(blob(b"EV a1 5\nabc\nEND\n"), asks) is None  # length lies
    bomb = b"EV a1 10\n0123456789\n" + b"\n" * (10 << 20) + b"END\n"
    assert parse_login_records(blob(bomb), asks) is None
    assert parse_login_records("not base64 !!", asks) is None
