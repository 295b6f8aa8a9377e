"""The relay timeline alone as SVG or PNG (`relaymd report --format svg|png`), for papers and
slides: matplotlib, imported only here, drawing off-screen (Agg)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from pathlib import Path

from relaymd.models import SegmentOutcome
from relaymd.views.figures import OUTCOME_COLOURS
from relaymd.views.snapshot import RelaySnapshot

DAY_S = 86400.0


def write_timeline_image(snapshot: RelaySnapshot, path: Path, image_format: str) -> None:
    """One lane per job: grey queue waits, then segments coloured by outcome; x in days."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    lanes = sorted({s.job_id for s in snapshot.segments})
    origin = min([s.started_at for s in snapshot.segments], default=snapshot.generated_at)
    origin = min([origin, *(a.submitted_at for a in snapshot.allocations)])
    row = {job_id: index for index, job_id in enumerate(reversed(lanes))}
    fig, ax = plt.subplots(figsize=(11, max(3.2, 1.4 + 0.32 * len(lanes))))
    lane_of = {s.allocation_id: s.job_id for s in snapshot.segments}
    for alloc in snapshot.allocations:
        if alloc.id in lane_of and alloc.queue_wait_s > 0:
            start = _days(alloc.submitted_at, origin)
            ax.broken_barh(
                [(start, alloc.queue_wait_s / DAY_S)], (row[lane_of[alloc.id]] - 0.3, 0.6),
                facecolors="#bbbbbb", alpha=0.6,
            )  # fmt: skip
    spans: dict[SegmentOutcome, dict[int, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for seg in snapshot.segments:
        end = seg.ended_at or snapshot.generated_at
        start = _days(seg.started_at, origin)
        spans[seg.outcome][row[seg.job_id]].append((start, _days(end, origin) - start))
    for outcome, by_row in spans.items():
        for lane, bars in by_row.items():
            ax.broken_barh(bars, (lane - 0.4, 0.8), facecolors=OUTCOME_COLOURS[outcome])
    ax.set_yticks(range(len(lanes)), list(reversed(lanes)))
    ax.set_xlabel(f"days since {origin:%Y-%m-%d %H:%M} UTC")
    ax.set_title("Relay timeline")
    legend = [Patch(color="#bbbbbb", label="queue wait")] + [
        Patch(color=OUTCOME_COLOURS[o], label=str(o)) for o in SegmentOutcome if o in spans
    ]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=len(legend))
    fig.tight_layout()
    fig.savefig(path, format=image_format, dpi=150)
    plt.close(fig)


def _days(when: datetime, origin: datetime) -> float:
    return (when - origin).total_seconds() / DAY_S
