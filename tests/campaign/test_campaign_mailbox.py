"""Standing campaign, the mailbox as a hostile or buggy worker writes it (issue 12).

Each case writes events/heartbeats a worker should never write, runs real daemon cycles
against them and asserts from outside RelayMD's code: no exception escapes a cycle, the
resume pointer is only ever a checkpoint whose manifest bytes prove it is j1's own, no job
state is lost (j2 untouched, j1 only in the states the rules allow), and no checkpoint
manifest present before was deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaymd.mailbox.models import EventKind, WorkerState
from tests.campaign.mailbox_cases import Case, MailboxBench

MB2 = 2 << 20
RUNNING = frozenset({"running"})
REQUEUED = frozenset({"queued"})


def _ref(b: MailboxBench, name: str, **update: object):
    return b.refs[name].model_copy(update=update)


def _checkpoint(b: MailboxBench, ref) -> None:
    b.event(EventKind.CHECKPOINT, step=ref.step, checkpoint=ref)


def _other_jobs_checkpoint(b: MailboxBench) -> None:
    _checkpoint(b, b.refs["j2:2-5"])


def _absurd_seq(b: MailboxBench) -> None:
    _checkpoint(b, _ref(b, "j1:2-2", seq=10**9))


def _seq_prefix_mismatch(b: MailboxBench) -> None:
    _checkpoint(b, _ref(b, "j1:2-2", seq=3))


def _step_disagrees(b: MailboxBench) -> None:
    _checkpoint(b, _ref(b, "j1:2-2", step=95))


def _step_goes_back(b: MailboxBench) -> None:
    _checkpoint(b, b.upload("j1", 2, 4, 3))


def _seq_repeats(b: MailboxBench) -> None:
    _checkpoint(b, _ref(b, "j1:2-1", step=60))


def _old_epoch_ref(b: MailboxBench) -> None:
    _checkpoint(b, b.upload("j1", 1, 9, 90))


def _future_epoch(b: MailboxBench) -> None:
    ref = b.upload("j1", 3, 1, 90)
    b.event(EventKind.CHECKPOINT, epoch=3, step=90, checkpoint=ref)


def _forged_sha(b: MailboxBench) -> None:
    _checkpoint(b, _ref(b, "j1:2-2", manifest_sha256="a" * 64))


def _missing_manifest(b: MailboxBench) -> None:
    _checkpoint(b, _ref(b, "j1:2-2", seq=7, prefix="jobs/j1/checkpoints/2-7/"))


def _missing_files(b: MailboxBench) -> None:
    ref = b.upload("j1", 2, 6, 60)
    (b.storage_root / ref.prefix / "state.bin").unlink()
    _checkpoint(b, ref)


def _path_traversal(b: MailboxBench) -> None:
    prefix = "jobs/j1/checkpoints/2-2/../../../j2/checkpoints/2-5/"
    _checkpoint(b, _ref(b, "j2:2-5", prefix=prefix))


def _many_claims(b: MailboxBench) -> None:
    for seq in range(10, 510):
        ref = _ref(b, "j1:2-2", seq=seq, step=seq, prefix=f"jobs/j1/checkpoints/2-{seq}/")
        _checkpoint(b, ref)


def _completed_bare(b: MailboxBench) -> None:
    b.event(EventKind.COMPLETED, step=5)


def _completed_short(b: MailboxBench) -> None:
    ref = b.refs["j1:2-2"]
    _checkpoint(b, ref)
    b.event(EventKind.COMPLETED, step=100, checkpoint=ref)


def _completed_foreign(b: MailboxBench) -> None:
    ref = b.upload("j2", 2, 6, 100)
    b.event(EventKind.COMPLETED, step=100, checkpoint=ref)


def _terminal_for_other_job(b: MailboxBench) -> None:
    for kind in (EventKind.COMPLETED, EventKind.FAILED, EventKind.HANDOFF, EventKind.STOPPED):
        b.event(kind, job_id="j2", step=100, checkpoint=b.refs["j2:2-5"])


def _oversized_then_genuine(b: MailboxBench) -> None:
    b.event(EventKind.FAILED, reason="x" * MB2)
    _checkpoint(b, b.refs["j1:2-2"])


def _binary_garbage(b: MailboxBench) -> None:
    b.append(os.urandom(4096).replace(b"\n", b"\x00") + b"\n" + b"\x00\xff\xfe" * 100 + b"\n")
    _checkpoint(b, _ref(b, "j1:2-2", seq=10**9))


def _non_utf8(b: MailboxBench) -> None:
    line = _event_json(b, "checkpoint").replace(b'"j1"', b'"j\xff\xfe1"')
    b.append(line + b"\n")


def _event_json(b: MailboxBench, kind: str) -> bytes:
    ref = b.refs["j1:2-2"].model_dump(mode="json")
    data = {"kind": kind, "allocation_id": "a1", "job_id": "j1", "epoch": 2, "checkpoint": ref}
    return json.dumps(data).encode()


def _deep_json(b: MailboxBench) -> None:
    b.append(b'{"kind": "completed", "allocation_id": "a1", "x": ' + b"[" * 9000 + b"]" * 9000)
    b.append(b"}\n")
    b.raw_event({"kind": "completed", "step": 100, "reason": {"a": {"b": {"c": [1] * 10}}}})


def _negative_numbers(b: MailboxBench) -> None:
    ref = b.refs["j1:2-2"].model_dump(mode="json")
    b.raw_event({"checkpoint": {**ref, "seq": -1}, "step": -5})
    b.raw_event({"checkpoint": {**ref, "step": -20}})
    b.raw_event({"kind": "completed", "step": -1, "epoch": -2})


def _nan_and_infinity(b: MailboxBench) -> None:
    ref = b.refs["j1:2-2"].model_dump(mode="json")
    b.append(b'{"kind": "checkpoint", "allocation_id": "a1", "job_id": "j1", "epoch": NaN}\n')
    b.append(
        b'{"kind": "completed", "allocation_id": "a1", "job_id": "j1", "epoch": 2,'
        b' "step": Infinity}\n'
    )
    b.raw_event({"checkpoint": {**ref, "step": 1e308}})


def _huge_integers(b: MailboxBench) -> None:
    ref = b.refs["j1:2-2"].model_dump(mode="json")
    b.raw_event({"checkpoint": {**ref, "seq": 10**30, "step": 10**30}})
    b.raw_event({"kind": "completed", "step": 10**40})


def _wrong_types(b: MailboxBench) -> None:
    for line in (b"[1, 2, 3]", b"null", b"42", b'"checkpoint"', b"{}", b'{"kind": 7}'):
        b.append(line + b"\n")
    b.raw_event({"kind": "teleported", "step": 100})
    b.raw_event({"checkpoint": "jobs/j2/checkpoints/2-5/"})


def _blank_and_partial(b: MailboxBench) -> None:
    b.append(b"\n\n   \n\t\n")
    b.append(_event_json(b, "completed")[:-10])  # never finished: waits, never parsed


def _other_allocation(b: MailboxBench) -> None:
    b.event(EventKind.CHECKPOINT, allocation_id="a9", step=20, checkpoint=b.refs["j1:2-2"])
    b.event(EventKind.COMPLETED, allocation_id="a9", step=100)


def _truncated_then_rewritten(b: MailboxBench) -> None:
    if not (b.folder / "events.jsonl").exists():
        b.event(EventKind.STARTED, step=10)
        b.event(EventKind.STARTED, step=10)
        return
    # After the daemon has read it: replaced by a shorter file, then hostile lines.
    (b.folder / "events.jsonl").write_bytes(b"")
    _checkpoint(b, _ref(b, "j1:2-2", seq=10**6))
    b.event(EventKind.COMPLETED, step=100)


def _replayed_old_events(b: MailboxBench) -> None:
    if not (b.folder / "events.jsonl").exists():
        _checkpoint(b, b.refs["j1:2-2"])
        return
    # The same file again from byte 0, as if rewound: old claims must not move anything.
    data = (b.folder / "events.jsonl").read_bytes()
    (b.folder / "events.jsonl").write_bytes(data + data)
    _checkpoint(b, b.refs["j1:2-1"])


def _idle_exit_with_job(b: MailboxBench) -> None:
    b.event(EventKind.IDLE_EXIT, step=100, checkpoint=b.refs["j2:2-5"])


# -- heartbeats ---------------------------------------------------------------------------


def _hb_other_job(b: MailboxBench) -> None:
    b.write_heartbeat(job_id="j2", epoch=2)


def _hb_old_epoch(b: MailboxBench) -> None:
    b.write_heartbeat(job_id="j1", epoch=1)


def _hb_other_allocation(b: MailboxBench) -> None:
    b.write_heartbeat(allocation_id="a9", job_id="j1", epoch=2)


def _hb_idle_while_bound(b: MailboxBench) -> None:
    b.write_heartbeat(state=WorkerState.IDLE)


def _hb_half_written(b: MailboxBench) -> None:
    b.genuine_heartbeat()
    data = (b.folder / "heartbeat.json").read_bytes()
    (b.folder / "heartbeat.json").write_bytes(data[: len(data) // 2])


def _hb_huge(b: MailboxBench) -> None:
    b.genuine_heartbeat()
    beat = json.loads((b.folder / "heartbeat.json").read_bytes())
    beat["hostname"] = "h" * MB2
    (b.folder / "heartbeat.json").write_text(json.dumps(beat))


def _hb_nan(b: MailboxBench) -> None:
    b.seq += 1
    (b.folder / "heartbeat.json").write_bytes(
        b'{"allocation_id": "a1", "seq": %d, "state": "running", "job_id": "j1", "epoch": 2,'
        b' "ns_per_day": NaN, "total_steps": -1}' % b.seq
    )


def _hb_binary(b: MailboxBench) -> None:
    (b.folder / "heartbeat.json").write_bytes(os.urandom(2048))


def _hb_genuine_with_lies(b: MailboxBench) -> None:
    """A heartbeat of the right assignment claiming the job is done: progress only."""
    b.write_heartbeat(
        job_id="j1", epoch=2, step=10**9, total_steps=1, last_checkpoint=b.refs["j2:2-5"]
    )


def _nothing(b: MailboxBench) -> None:
    return None


CASES = [
    Case("checkpoint_of_another_job", _other_jobs_checkpoint),
    Case("checkpoint_absurd_seq", _absurd_seq),
    Case("checkpoint_seq_prefix_mismatch", _seq_prefix_mismatch),
    Case("checkpoint_step_disagrees_with_manifest", _step_disagrees),
    Case("checkpoint_step_goes_backwards", _step_goes_back),
    Case("checkpoint_seq_repeats_the_pointer", _seq_repeats),
    Case("checkpoint_of_an_old_epoch", _old_epoch_ref),
    Case("checkpoint_of_a_future_epoch", _future_epoch),
    Case("checkpoint_forged_manifest_sha", _forged_sha),
    Case("checkpoint_without_manifest", _missing_manifest),
    Case("checkpoint_with_missing_files", _missing_files),
    Case("checkpoint_prefix_path_traversal", _path_traversal),
    Case("checkpoint_claims_flood", _many_claims),
    Case("completed_without_checkpoint", _completed_bare),
    Case("completed_short_of_total", _completed_short, pointer="2-2"),
    Case("completed_with_another_jobs_checkpoint", _completed_foreign),
    Case("terminal_events_for_another_job", _terminal_for_other_job),
    Case("oversized_line_then_genuine_checkpoint", _oversized_then_genuine, pointer="2-2"),
    Case("binary_garbage", _binary_garbage),
    Case("non_utf8", _non_utf8),
    Case("deeply_nested_json", _deep_json),
    Case("negative_numbers", _negative_numbers),
    Case("nan_and_infinity", _nan_and_infinity),
    Case("huge_integers", _huge_integers),
    Case("wrong_json_types_and_unknown_kind", _wrong_types),
    Case("blank_and_unfinished_lines", _blank_and_partial),
    Case("events_naming_another_allocation", _other_allocation),
    Case("events_truncated_then_rewritten", _truncated_then_rewritten, each_cycle=True),
    Case("events_rewound_and_replayed", _replayed_old_events, each_cycle=True, pointer="2-2"),
    Case("idle_exit_carrying_a_checkpoint", _idle_exit_with_job),
    Case("heartbeat_of_another_job", _nothing, heartbeat=_hb_other_job, states=REQUEUED),
    Case("heartbeat_of_an_old_epoch", _nothing, heartbeat=_hb_old_epoch, states=REQUEUED),
    Case(
        "heartbeat_of_another_allocation",
        _nothing,
        heartbeat=_hb_other_allocation,
        states=REQUEUED,
    ),
    Case("heartbeat_idle_while_bound", _nothing, heartbeat=_hb_idle_while_bound, states=REQUEUED),
    Case("heartbeat_half_written", _nothing, heartbeat=_hb_half_written, states=REQUEUED),
    Case("heartbeat_huge", _nothing, heartbeat=_hb_huge, states=REQUEUED),
    Case("heartbeat_nan_and_negative", _nothing, heartbeat=_hb_nan, states=REQUEUED),
    Case("heartbeat_binary", _nothing, heartbeat=_hb_binary, states=REQUEUED),
    Case("heartbeat_claims_completion", _nothing, heartbeat=_hb_genuine_with_lies),
]


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[MailboxBench]:
    b = MailboxBench(tmp_path)
    try:
        await b.start()
        yield b
    finally:
        await b.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_mailbox(bench: MailboxBench, case: Case) -> None:
    reports = await bench.run(case)
    # No exception escaped (it would have failed the test) and every cycle completed.
    assert all(r.ok for r in reports), [r.error for r in reports]
    j1 = bench.job_row("j1")
    # The pointer is a checkpoint whose bytes in storage prove it is j1's, and the one the
    # case allows (unchanged unless the worker reported a genuine, advancing one).
    assert bench.pointer_proof(j1["checkpoint"]) == case.pointer
    for fallback in j1["fallbacks"]:
        bench.pointer_proof(fallback)
    assert j1["state"] in case.states, (j1["state"], j1.get("failure_reason"))
    if j1["state"] == "queued":
        assert j1["step"] == j1["checkpoint"]["step"]  # resumes from the pointer
    assert j1["retries"] == 0
    # j2 is untouched, and nothing in storage was deleted.
    assert bench.job_row("j2") == bench.initial_j2
    assert bench.manifests() >= bench.initial_manifests
    assert "job_complete" not in bench.audit_kinds()
