"""The report's charts as plotly figures (plotly imported here only, when a report or the
dashboard is drawn): timeline, progress with ETA, GPU-hours, handoff losses, queue waits,
failure causes."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING

from relaymd.models import SegmentOutcome
from relaymd.views.relay_facts import failure_causes, handoff_gaps, queue_waits
from relaymd.views.snapshot import RelaySnapshot, SegmentView

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

OUTCOME_COLOURS = {
    SegmentOutcome.RUNNING: "#1f77b4",
    SegmentOutcome.HANDOFF: "#2ca02c",
    SegmentOutcome.COMPLETED: "#006d2c",
    SegmentOutcome.FAILED: "#d62728",
    SegmentOutcome.LOST: "#ff7f0e",
    SegmentOutcome.STOPPED: "#9467bd",
    SegmentOutcome.CANCELLED: "#7f7f7f",
}
QUEUE_COLOUR = "rgba(160,160,160,0.45)"
LABELS_UP_TO = 400  # cluster names printed on the bars while they stay readable


def _figure(title: str, height: int = 380) -> Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(
        title=title, height=height, template="plotly_white", margin={"l": 60, "r": 20, "t": 50}
    )
    return fig


def timeline(snapshot: RelaySnapshot) -> Figure:
    """One lane per job; each segment a bar coloured by outcome (its cluster written on it),
    each allocation's queue wait before it a grey bar: gaps in a lane are lost time."""
    import plotly.graph_objects as go

    lanes = sorted({s.job_id for s in snapshot.segments})
    fig = _figure("Relay timeline", height=max(320, 120 + 26 * len(lanes)))
    _queue_bars(fig, snapshot)
    by_outcome: dict[SegmentOutcome, list[SegmentView]] = defaultdict(list)
    for seg in snapshot.segments:
        by_outcome[seg.outcome].append(seg)
    labels = len(snapshot.segments) <= LABELS_UP_TO
    for outcome, segments in by_outcome.items():
        ends = [s.ended_at or snapshot.generated_at for s in segments]
        fig.add_trace(
            go.Bar(
                name=str(outcome),
                orientation="h",
                y=[s.job_id for s in segments],
                base=[s.started_at.isoformat() for s in segments],
                x=[
                    (e - s.started_at) / timedelta(milliseconds=1)
                    for s, e in zip(segments, ends, strict=True)
                ],
                marker_color=OUTCOME_COLOURS[outcome],
                text=[s.cluster for s in segments] if labels else None,
                textposition="inside",
                hovertext=[_segment_hover(s) for s in segments],
                hoverinfo="text",
            )
        )
    fig.update_layout(barmode="overlay", xaxis={"type": "date"}, legend={"orientation": "h"})
    fig.update_yaxes(categoryorder="array", categoryarray=lanes[::-1])
    return fig


def _segment_hover(seg: SegmentView) -> str:
    end = seg.ended_at.strftime("%m-%d %H:%M") if seg.ended_at else "now"
    steps = f"{seg.start_step} → {seg.end_step if seg.end_step is not None else '…'}"
    return (
        f"{seg.job_id} epoch {seg.epoch}: {seg.outcome}<br>{seg.cluster}/{seg.partition}"
        f" allocation {seg.allocation_id} (SLURM {seg.scheduler_id or '-'})<br>"
        f"{seg.started_at:%m-%d %H:%M} → {end}, steps {steps}<br>{seg.reason or ''}"
    )


def _queue_bars(fig: Figure, snapshot: RelaySnapshot) -> None:
    import plotly.graph_objects as go

    lane_of = {s.allocation_id: s.job_id for s in snapshot.segments}
    queued = [a for a in snapshot.allocations if a.id in lane_of and a.queue_wait_s > 0]
    fig.add_trace(
        go.Bar(
            name="queue wait",
            orientation="h",
            y=[lane_of[a.id] for a in queued],
            base=[a.submitted_at.isoformat() for a in queued],
            x=[a.queue_wait_s * 1000 for a in queued],
            marker_color=QUEUE_COLOUR,
            hovertext=[
                f"{a.cluster}/{a.partition} allocation {a.id}: queued {a.queue_wait_s / 60:.0f} min"
                for a in queued
            ],
            hoverinfo="text",
        )
    )


def progress(snapshot: RelaySnapshot) -> Figure:
    """Each job's fraction done over time (segment by segment), dashed to its ETA."""
    import plotly.graph_objects as go

    fig = _figure("Progress and ETA")
    totals = {j.id: j.total_steps for j in snapshot.jobs if j.total_steps}
    xs: list[str | None] = []
    ys: list[float | None] = []
    names: list[str | None] = []
    for seg in sorted(snapshot.segments, key=lambda s: (s.job_id, s.epoch)):
        total = totals.get(seg.job_id)
        if not total or seg.end_step is None:
            continue
        end = seg.ended_at or snapshot.generated_at
        xs += [seg.started_at.isoformat(), end.isoformat(), None]
        ys += [seg.start_step / total, seg.end_step / total, None]
        names += [seg.job_id, seg.job_id, None]
    fig.add_trace(go.Scatter(name="done", x=xs, y=ys, mode="lines", hovertext=names))
    eta_x: list[str | None] = []
    eta_y: list[float | None] = []
    basis: list[str | None] = []
    for job in snapshot.jobs:
        if job.eta is None or job.fraction is None:
            continue
        finish = snapshot.generated_at + timedelta(seconds=job.eta.total_s)
        eta_x += [snapshot.generated_at.isoformat(), finish.isoformat(), None]
        eta_y += [job.fraction, 1.0, None]
        basis += [f"{job.id}: {job.eta.basis}"] * 2 + [None]
    fig.add_trace(
        go.Scatter(
            name="ETA", x=eta_x, y=eta_y, mode="lines+markers", line={"dash": "dash"},
            hovertext=basis, hoverinfo="text",
        )
    )  # fmt: skip
    fig.update_yaxes(tickformat=".0%", range=[0, 1.05])
    return fig


def gpu_hours(snapshot: RelaySnapshot) -> Figure:
    """Allocated vs simulating GPU-hours per cluster: the relay's efficiency."""
    import plotly.graph_objects as go

    fig = _figure("GPU-hours per cluster: allocated vs simulating")
    clusters = list(snapshot.usage_by_cluster)
    usage = [snapshot.usage_by_cluster[c] for c in clusters]
    for name, values in (
        ("allocated", [u.allocated_gpu_s / 3600 for u in usage]),
        ("simulating", [u.simulating_gpu_s / 3600 for u in usage]),
    ):
        fig.add_trace(go.Bar(name=name, x=clusters, y=values))
    fig.update_layout(barmode="group", yaxis_title="GPU-hours")
    return fig


def handoff_losses(snapshot: RelaySnapshot) -> Figure:
    """Seconds from a handoff to the successor's first step, by the cluster it moved to."""
    import plotly.graph_objects as go

    fig = _figure("Lost seconds per handoff")
    gaps = handoff_gaps(snapshot)
    for cluster in sorted({g.to_cluster for g in gaps}):
        mine = [g for g in gaps if g.to_cluster == cluster]
        fig.add_trace(
            go.Box(
                name=f"to {cluster}", y=[g.lost_s for g in mine], boxpoints="all",
                hovertext=[f"{g.job_id} epoch {g.epoch} from {g.from_cluster}" for g in mine],
            )
        )  # fmt: skip
    fig.update_layout(yaxis_title="seconds")
    return fig


def queue_wait_distribution(snapshot: RelaySnapshot) -> Figure:
    import plotly.graph_objects as go

    fig = _figure("Queue wait per cluster/partition")
    for where, waits in queue_waits(snapshot).items():
        fig.add_trace(go.Box(name=where, y=[w / 60 for w in waits], boxpoints="all"))
    fig.update_layout(yaxis_title="minutes")
    return fig


def failures(snapshot: RelaySnapshot) -> Figure:
    import plotly.graph_objects as go

    fig = _figure("Failures by classified cause")
    causes = failure_causes(snapshot)
    for outcome in sorted({c.outcome for c in causes}):
        mine = [c for c in causes if c.outcome == outcome]
        fig.add_trace(
            go.Bar(
                name=str(outcome), orientation="h", y=[c.reason for c in mine],
                x=[c.segments for c in mine], marker_color=OUTCOME_COLOURS[outcome],
            )
        )  # fmt: skip
    fig.update_layout(xaxis_title="segments", barmode="stack")
    return fig


CHARTS = (
    ("timeline", timeline),
    ("progress", progress),
    ("gpu-hours", gpu_hours),
    ("handoff-losses", handoff_losses),
    ("queue-waits", queue_wait_distribution),
    ("failures", failures),
)
