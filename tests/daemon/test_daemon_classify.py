import pytest

from relaymd.daemon.classify import (
    Verdict,
    classify_allocation_end,
    classify_event,
    classify_hung,
    classify_stop_timeout,
)
from relaymd.mailbox.models import EventKind, WorkerEvent
from relaymd.models import (
    CheckpointRef,
    OperatorRequest,
    SegmentOutcome,
)
from tests.daemon.daemon_factories import make_job


def event(kind: EventKind, **fields: object) -> WorkerEvent:
    return WorkerEvent(kind=kind, allocation_id="a1", job_id="j1", epoch=1, **fields)


@pytest.mark.parametrize(
    "state", ["TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "DEADLINE"]
)
def test_infrastructure_ends_requeue_without_spending_a_retry(state: str) -> None:
    out = classify_allocation_end(make_job(), state)
    assert out.verdict is Verdict.REQUEUE
    assert out.segment is SegmentOutcome.LOST
    assert not out.counts_retry
    assert state in out.reason


def test_lost_allocation_requeues() -> None:
    out = classify_allocation_end(make_job(), None)
    assert (out.verdict, out.counts_retry) == (Verdict.REQUEUE, False)
    assert "UNKNOWN" in out.reason


def test_failed_without_event_spends_retries_then_fails() -> None:
    # The second unexplained death in a row without a checkpoint spends a retry.
    again = {"losses_without_progress": 1}
    out = classify_allocation_end(
        make_job(max_retries=2, retries=1, **again), "FAILED", 137, ["boom"]
    )
    assert (out.verdict, out.counts_retry) == (Verdict.REQUEUE, True)
    assert "exit code 137" in out.reason
    out = classify_allocation_end(
        make_job(max_retries=2, retries=2, **again), "FAILED", 1, ["boom"]
    )
    assert out.verdict is Verdict.FAIL
    assert out.log_tail == ["boom"]


def test_application_failure_event_is_bounded() -> None:
    failed = event(EventKind.FAILED, reason="NaN in coordinates", log_tail=["a", "b"])
    out = classify_event(make_job(max_retries=1, retries=0), failed)
    assert out is not None and out.verdict is Verdict.REQUEUE and out.counts_retry
    out = classify_event(make_job(max_retries=1, retries=1), failed)
    assert out is not None and out.verdict is Verdict.FAIL
    assert "NaN in coordinates" in out.reason and out.log_tail == ["a", "b"]
    assert out.segment is SegmentOutcome.FAILED


def test_retryable_failure_event_requeues_for_free() -> None:
    out = classify_event(
        make_job(retries=5, max_retries=0), event(EventKind.FAILED, retryable=True)
    )
    assert out is not None and out.verdict is Verdict.REQUEUE and not out.counts_retry


def test_handoff_complete_and_progress_events() -> None:
    out = classify_event(make_job(), event(EventKind.HANDOFF, step=40))
    assert out is not None and (out.verdict, out.segment) == (
        Verdict.REQUEUE,
        SegmentOutcome.HANDOFF,
    )
    out = classify_event(make_job(), event(EventKind.COMPLETED, step=100))
    assert out is not None and out.verdict is Verdict.COMPLETE and out.end_step == 100
    assert classify_event(make_job(), event(EventKind.CHECKPOINT)) is None
    assert classify_event(make_job(), event(EventKind.STARTED)) is None


def test_operator_requests_win_over_requeue() -> None:
    cancel = make_job(operator_request=OperatorRequest.CANCEL)
    for out in (
        classify_event(cancel, event(EventKind.STOPPED)),
        classify_event(cancel, event(EventKind.HANDOFF)),
        classify_allocation_end(cancel, "TIMEOUT"),
        classify_hung(cancel, 300),
        classify_stop_timeout(cancel),
    ):
        assert out is not None and out.verdict is Verdict.CANCEL
    requeue = make_job(operator_request=OperatorRequest.REQUEUE)
    out = classify_event(requeue, event(EventKind.STOPPED))
    assert out is not None and out.verdict is Verdict.REQUEUE and "operator" in out.reason
    # Completion is completion, whatever was asked meanwhile.
    out = classify_event(cancel, event(EventKind.COMPLETED))
    assert out is not None and out.verdict is Verdict.COMPLETE


def test_hung_worker_requeues() -> None:
    out = classify_hung(make_job(), 301)
    assert out.verdict is Verdict.REQUEUE and "stale" in out.reason


def _ref(epoch: int, step: int) -> CheckpointRef:
    return CheckpointRef(
        epoch=epoch,
        seq=1,
        step=step,
        prefix=f"jobs/j1/checkpoints/{epoch}-1/",
        manifest_sha256="0" * 64,
    )


def test_killed_worker_that_advanced_the_checkpoint_spends_no_retry() -> None:
    # SIGKILL of the worker (sacct FAILED, no event of its own) after this epoch's checkpoint.
    job = make_job(max_retries=3, epoch=4, checkpoint=_ref(4, 500), losses_without_progress=1)
    for state in ("FAILED", "COMPLETED"):
        out = classify_allocation_end(job, state, 137)
        assert (out.verdict, out.counts_retry) == (Verdict.REQUEUE, False), out
        assert out.segment is SegmentOutcome.LOST
        assert out.losses_without_progress == 0
        assert "advanced the checkpoint" in out.reason
    out = classify_hung(job, 301)
    assert (out.verdict, out.counts_retry, out.losses_without_progress) == (
        Verdict.REQUEUE,
        False,
        0,
    )


def test_four_node_kills_with_progress_never_fail_a_healthy_job() -> None:
    job = make_job(max_retries=3, epoch=1)
    for epoch in range(1, 6):
        job = job.model_copy(update={"epoch": epoch, "checkpoint": _ref(epoch, 100 * epoch)})
        out = classify_allocation_end(job, "FAILED", 137)
        assert out.verdict is Verdict.REQUEUE and not out.counts_retry
        job = job.model_copy(update={"losses_without_progress": out.losses_without_progress})


def test_worker_deaths_without_progress_spend_retries_when_they_recur() -> None:
    # No checkpoint of this epoch: the pointer is from an earlier segment (or absent).
    first = make_job(max_retries=2, epoch=3, checkpoint=_ref(2, 200))
    out = classify_allocation_end(first, "FAILED", 137)
    assert (out.verdict, out.counts_retry, out.losses_without_progress) == (
        Verdict.REQUEUE,
        False,
        1,
    )
    again = first.model_copy(update={"epoch": 4, "losses_without_progress": 1})
    out = classify_allocation_end(again, "FAILED", 137, ["killed"])
    assert (out.verdict, out.counts_retry, out.losses_without_progress) == (
        Verdict.REQUEUE,
        True,
        2,
    )
    assert "2 segments in a row" in out.reason and out.log_tail == ["killed"]
    spent = again.model_copy(update={"retries": 2, "losses_without_progress": 2})
    assert classify_allocation_end(spent, "FAILED", 137).verdict is Verdict.FAIL
    # A worker that hangs every time without progress is bounded the same way.
    assert classify_hung(spent, 301).verdict is Verdict.FAIL


def test_engine_reported_failure_spends_a_retry_even_with_progress() -> None:
    job = make_job(max_retries=3, epoch=1, checkpoint=_ref(1, 300))
    out = classify_event(job, event(EventKind.FAILED, reason="NaN"))
    assert out is not None and out.counts_retry
