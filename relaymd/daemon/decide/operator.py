"""Operator requests stored on job rows (`relaymd jobs cancel|requeue` of an active job).

A job waiting for an allocation is cancelled at once; a job on an allocation gets its worker
told to stop, and the segment's end (classify) carries out the request.
"""

from __future__ import annotations

from relaymd.daemon.decide.cycle import Cycle
from relaymd.models import JobState, OperatorRequest


def carry_out_requests(cycle: Cycle) -> None:
    for job in list(cycle.jobs.values()):
        if job.operator_request is None or job.state.is_final:
            continue
        if not job.state.on_allocation:  # queued or held
            if job.operator_request is OperatorRequest.CANCEL:
                cycle.put_job(
                    job.model_copy(update={"state": JobState.CANCELLED, "operator_request": None})
                )
                cycle.audit("job_cancel", "cancelled by operator while queued", job_id=job.id)
            else:
                cycle.put_job(job.model_copy(update={"operator_request": None}))
                cycle.audit("job_requeue", "already queued", job_id=job.id)
            continue
        alloc = cycle.allocs.get(job.allocation_id or "")
        if alloc is None or alloc.stop_requested_at is not None:
            continue
        message = f"operator {job.operator_request.value}: stop sent to the worker"
        cycle.stop_worker(alloc, "stop_requested", message, job_id=job.id)
