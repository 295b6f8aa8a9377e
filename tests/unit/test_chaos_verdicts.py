"""The chaos campaign's verdicts (bench/chaos_verdicts.py) catch what they must, on made-up
outputs: duplicated and missing sample lines, a slowest replica off MAX_SAMPLES, a resume from
a stale epoch's checkpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bench.chaos_verdicts import AllocRecord, check_fencing, diff_lines, judge_samples, kept_seconds
from relaymd.mailbox.models import Assignment, EventKind, HandoffGate, WorkerEvent
from relaymd.models import CheckpointRef, ObjectRef, OpenMMSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
JOB = "j1"


def _ref(epoch: int, seq: int, step: int) -> CheckpointRef:
    return CheckpointRef(
        epoch=epoch, seq=seq, step=step, prefix=f"jobs/{JOB}/checkpoints/{epoch}-{seq}/",
        manifest_sha256="0" * 64,
    )  # fmt: skip


def _event(
    kind: EventKind, epoch: int, at_s: float, ref: CheckpointRef | None = None
) -> WorkerEvent:
    return WorkerEvent(
        kind=kind,
        allocation_id=f"a{epoch}",
        job_id=JOB,
        epoch=epoch,
        step=ref.step if ref else 0,
        checkpoint=ref,
        at=T0 + timedelta(seconds=at_s),
    )


def _records(*events: WorkerEvent) -> list[AllocRecord]:
    by_alloc: dict[str, list[WorkerEvent]] = {}
    for e in events:
        by_alloc.setdefault(e.allocation_id, []).append(e)
    return [
        AllocRecord(cluster="c", allocation_id=a, events=evs, assignment=None)
        for a, evs in by_alloc.items()
    ]


def _never_stored(_key: str) -> datetime | None:
    return None


def test_diff_counts_duplicated_and_missing_samples() -> None:
    reference = [f"sample {i}" for i in range(1, 11)]
    assert diff_lines(reference, reference) == (0, 0)
    twice = reference[:6] + reference[4:]  # samples 5 and 6 appended again after a resume
    assert diff_lines(reference, twice) == (2, 0)
    assert diff_lines(reference, reference[:3] + reference[5:]) == (0, 2)
    assert diff_lines(reference, reference[:-1]) == (0, 1)


MAX = 6
# An uninterrupted run, past MAX_SAMPLES (bench/chaos_jobs.REFERENCE_EXTRA), per replica.
REFERENCE = {f"r{k}/fake.out": [f"{k} sample {i}" for i in range(1, MAX + 5)] for k in range(2)}


def _judge(r0: list[str], r1: list[str]) -> tuple[int, int, list[str]]:
    check = judge_samples(JOB, 3, REFERENCE, {"r0/fake.out": r0, "r1/fake.out": r1}, MAX)
    return check.duplicates, check.gaps, check.problems


def test_slowest_replica_at_max_samples_and_a_faster_one_ahead_pass() -> None:
    r0, r1 = REFERENCE["r0/fake.out"], REFERENCE["r1/fake.out"]
    assert _judge(r0[:MAX], r1[:MAX]) == (0, 0, [])
    # After resumes a faster replica holds more of the run's own lines: samples, not extras.
    assert _judge(r0[: MAX + 2], r1[:MAX]) == (0, 0, [])


def test_a_sample_written_again_after_a_resume_is_a_duplicate() -> None:
    r0, r1 = REFERENCE["r0/fake.out"], REFERENCE["r1/fake.out"]
    again = r0[:4] + r0[3:MAX]  # sample 4 kept past the checkpoint, then computed again
    duplicates, gaps, problems = _judge(again, r1[:MAX])
    assert (duplicates, gaps) == (1, 0)
    assert len(problems) == 1 and "r0/fake.out of epoch 3" in problems[0]


def test_missing_samples_are_gaps_and_the_slowest_replica_must_have_max_samples() -> None:
    r0, r1 = REFERENCE["r0/fake.out"], REFERENCE["r1/fake.out"]
    duplicates, gaps, problems = _judge(r0[:2] + r0[3:MAX], r1[:MAX])
    assert (duplicates, gaps) == (0, 1) and "1 missing" in problems[0]
    short = _judge(r0[: MAX - 1], r1[:MAX])  # stopped one sample early: a gap at the end
    assert short[:2] == (0, 1) and any("slowest replica has 5" in p for p in short[2])
    over = _judge(r0[: MAX + 1], r1[: MAX + 1])  # nobody stopped at MAX_SAMPLES
    assert over[:2] == (0, 0) and over[2] == [
        f"{JOB}: epoch 3: slowest replica has 7 samples, not MAX_SAMPLES {MAX}"
    ]


def test_a_missing_replica_file_is_all_gaps() -> None:
    check = judge_samples(JOB, 3, REFERENCE, {"r0/fake.out": REFERENCE["r0/fake.out"][:MAX]}, MAX)
    assert check.gaps == MAX and check.problems


def test_resume_from_a_checkpoint_of_the_current_epoch_passes() -> None:
    c = _ref(1, 1, 40)
    records = _records(
        _event(EventKind.STARTED, 1, 0),
        _event(EventKind.CHECKPOINT, 1, 10, c),
        _event(EventKind.HANDOFF, 1, 20, c),
        _event(EventKind.STARTED, 2, 30, c),
    )
    assert check_fencing(records, JOB, _never_stored) == []


def test_resume_from_a_checkpoint_written_after_its_epoch_was_superseded_fails() -> None:
    late = _ref(1, 2, 60)
    records = _records(
        _event(EventKind.STARTED, 1, 0),
        _event(EventKind.STARTED, 2, 30),  # epoch 1's worker was judged lost meanwhile
        _event(EventKind.CHECKPOINT, 1, 40, late),  # the thawed old worker writes on
        _event(EventKind.STARTED, 3, 90, late),
    )
    problems = check_fencing(records, JOB, _never_stored)
    assert len(problems) == 1 and "after epoch 1 was superseded" in problems[0]


def _assignment(epoch: int, issued_s: float, gated: bool) -> Assignment:
    return Assignment(
        allocation_id=f"a{epoch}",
        job_id=JOB,
        epoch=epoch,
        engine=OpenMMSettings(total_steps=1000),
        bundle=ObjectRef(key=f"jobs/{JOB}/input/bundle.tar.gz", size=1, sha256="0" * 64),
        issued_at=T0 + timedelta(seconds=issued_s),
        after_handoff=(
            HandoffGate(job_id=JOB, after_epoch=epoch - 1, expires_at=T0 + timedelta(hours=1))
            if gated
            else None
        ),
    )


def test_pre_written_successor_is_born_when_it_starts_not_when_it_was_written() -> None:
    # ADR 0009: epoch 2's gated assignment is written before epoch 1's handoff checkpoint
    # and only runs from it; an ungated one issued then would supersede epoch 1 at once.
    final = _ref(1, 2, 60)
    events = [
        _event(EventKind.STARTED, 1, 0),
        _event(EventKind.CHECKPOINT, 1, 40, final),
        _event(EventKind.HANDOFF, 1, 41, final),
        _event(EventKind.STARTED, 2, 42, final),
    ]
    for gated, problems in ((True, 0), (False, 1)):
        records = _records(*events)
        records[1] = records[1].model_copy(update={"assignment": _assignment(2, 5, gated)})
        assert len(check_fencing(records, JOB, _never_stored)) == problems, gated


def test_resume_from_an_unreported_checkpoint_or_a_later_epoch_fails() -> None:
    records = _records(
        _event(EventKind.STARTED, 1, 0),
        _event(EventKind.STARTED, 2, 30, _ref(1, 5, 50)),
        _event(EventKind.STARTED, 3, 60, _ref(3, 1, 70)),
    )
    problems = check_fencing(records, JOB, _never_stored)
    assert len(problems) == 2
    assert "never reported" in problems[0] and "not of an earlier epoch" in problems[1]


def test_kept_time_ends_at_the_last_checkpoint_of_a_killed_worker() -> None:
    c = _ref(1, 1, 40)
    handed_off = [
        _event(EventKind.STARTED, 1, 0),
        _event(EventKind.CHECKPOINT, 1, 10, c),
        _event(EventKind.HANDOFF, 1, 25, c),
    ]
    killed = [_event(EventKind.STARTED, 2, 0), _event(EventKind.CHECKPOINT, 2, 12, c)]
    assert kept_seconds(handed_off) == 25
    assert kept_seconds(killed) == 12
    assert kept_seconds([_event(EventKind.STARTED, 3, 0)]) == 0
