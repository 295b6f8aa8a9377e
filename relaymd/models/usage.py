"""What allocations cost and what they were used for, in GPU-seconds (`relaymd/state/usage.py`)."""

from __future__ import annotations

from pydantic import Field

from relaymd.models.base import WireModel


class GpuUsage(WireModel):
    """GPU-seconds on the daemon's clock (times as the cycle that saw each change recorded
    them, so each figure is accurate to about one poll interval per segment).

    An allocation counts from the cycle that saw it running to the one that saw it end (now
    while live), times its GPUs (the worker's nvidia-smi count; 1 for a GPU-less allocation).
    `allocated = simulating + idle`; `idle = startup + between + tail`.
    """

    allocated_gpu_s: float = Field(0.0, ge=0)
    # Bound to the job: from the binding (or a reserved successor's activation) to the end
    # of the segment the daemon recorded, so it includes staging and the final upload.
    simulating_gpu_s: float = Field(0.0, ge=0)
    idle_gpu_s: float = Field(0.0, ge=0)
    # Allocation running, first segment not started yet: worker start-up and the first wait.
    startup_gpu_s: float = Field(0.0, ge=0)
    # Between two segments on one allocation (a warm or reserved worker waiting for a
    # handoff, a handoff gap): charged to the job of the later segment.
    between_gpu_s: float = Field(0.0, ge=0)
    # After an allocation's last segment until it ended: charged to that segment's job.
    # An allocation that never ran a segment is all tail, charged to no job.
    tail_gpu_s: float = Field(0.0, ge=0)

    def plus(self, other: GpuUsage) -> GpuUsage:
        return GpuUsage(
            **{name: getattr(self, name) + getattr(other, name) for name in GpuUsage.model_fields}
        )
