"""The job state machine on the job model: every allowed move, and that nothing else is."""

from __future__ import annotations

import itertools

import pytest

from relaymd.models import JobState
from relaymd.models.job import Actor, JobTransitionError, can_transition, check_transition

Q, A, R, H = JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING, JobState.HELD
C, F, X = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED
DMN, OPR = Actor.DAEMON, Actor.OPERATOR

# Written out from docs/job-lifecycle.md, independently of the table under test.
ALLOWED = {
    (Q, A, DMN),  # late binding, or a reserved successor activated
    (Q, H, OPR),  # jobs hold
    (Q, X, OPR),  # jobs cancel
    (Q, X, DMN),  # a cancel request stored while the job ran, carried out once it is queued
    (H, Q, OPR),  # jobs release / jobs requeue
    (H, X, OPR),
    (H, X, DMN),
    (A, R, DMN),  # the worker started
    *((old, new, DMN) for old in (A, R) for new in (Q, C, F, X)),  # the segment ended
    (F, Q, OPR),  # jobs requeue: retries reset
    (X, Q, OPR),
}


@pytest.mark.parametrize(("old", "new", "by"), sorted(ALLOWED, key=str))
def test_every_allowed_transition(old: JobState, new: JobState, by: Actor) -> None:
    assert can_transition(old, new, by)
    check_transition("j1", old, new, by)  # does not raise


def test_nothing_else_is_allowed() -> None:
    moves = itertools.product(JobState, JobState, (DMN, OPR))
    forbidden = [m for m in moves if m[0] is not m[1] and m not in ALLOWED]
    assert len(forbidden) == 7 * 6 * 2 - len(ALLOWED)
    for old, new, by in forbidden:
        assert not can_transition(old, new, by), (old, new, by)


@pytest.mark.parametrize(
    ("old", "new", "by"),
    [
        (C, Q, OPR),  # a completed job is submitted again, never requeued
        (R, X, OPR),  # a running job's worker must stop first: the operator only asks
        (R, Q, OPR),
        (Q, R, DMN),  # never running without an assignment
        (F, Q, DMN),  # only an operator spends the retries again
        (H, A, DMN),  # a held job is not bound
        (X, C, DMN),
    ],
)
def test_forbidden_transitions_raise_naming_the_job(
    old: JobState, new: JobState, by: Actor
) -> None:
    with pytest.raises(JobTransitionError, match=f"job j7: .* from {old} to {new}"):
        check_transition("j7", old, new, by)


def test_staying_put_is_no_transition() -> None:
    for state, by in itertools.product(JobState, (DMN, OPR)):
        assert not can_transition(state, state, by)
        check_transition("j1", state, state, by)  # an update that keeps the state


def test_active_and_on_allocation_states() -> None:
    assert JobState.active() == [Q, A, R, H]
    assert [s for s in JobState if s.on_allocation] == [A, R]
    assert all(not s.is_active for s in (C, F, X))
    # A job on an allocation is moved on by the daemon alone.
    for state, new in itertools.product([A, R], JobState):
        assert not can_transition(state, new, OPR)
