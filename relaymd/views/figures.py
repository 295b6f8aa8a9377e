"""The report's charts as plotly.js figure specs (relaymd.views.plotly_spec): timeline,
progress with ETA, GPU-hours, handoff losses, queue waits, failure causes."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from relaymd.models import SegmentOutcome
from relaymd.views.plotly_spec import Axis, Figure, Layout, Line, Marker, Trace, Value, titled
from relaymd.views.relay_facts import failure_causes, handoff_gaps, queue_waits
from relaymd.views.snapshot import RelaySnapshot, SegmentView

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


def _layout(title: str, height: int = 380, **fields: object) -> Layout:
    return Layout.model_validate({"title": titled(title), "height": height, **fields})


def timeline(snapshot: RelaySnapshot) -> Figure:
    """One lane per job; each segment a bar coloured by outcome (its cluster written on it),
    each allocation's queue wait before it a grey bar: gaps in a lane are lost time."""
    lanes = sorted({s.job_id for s in snapshot.segments})
    by_outcome: dict[SegmentOutcome, list[SegmentView]] = defaultdict(list)
    for seg in snapshot.segments:
        by_outcome[seg.outcome].append(seg)
    labels = len(snapshot.segments) <= LABELS_UP_TO
    traces = [_queue_bars(snapshot)]
    for outcome, segments in by_outcome.items():
        ends = [s.ended_at or snapshot.generated_at for s in segments]
        traces.append(
            Trace(
                type="bar",
                name=str(outcome),
                orientation="h",
                y=[s.job_id for s in segments],
                base=[s.started_at.isoformat() for s in segments],
                x=[
                    (e - s.started_at) / timedelta(milliseconds=1)
                    for s, e in zip(segments, ends, strict=True)
                ],
                marker=Marker(color=OUTCOME_COLOURS[outcome]),
                text=[s.cluster for s in segments] if labels else None,
                textposition="inside" if labels else None,
                hovertext=[_segment_hover(s) for s in segments],
                hoverinfo="text",
            )
        )
    layout = _layout(
        "Relay timeline",
        max(320, 120 + 26 * len(lanes)),
        barmode="overlay",
        xaxis=Axis(type="date"),
        yaxis=Axis(type="category", categoryorder="array", categoryarray=lanes[::-1]),
        legend={"orientation": "h"},
    )
    return Figure(data=traces, layout=layout)


def _clock(at: datetime) -> str:
    """`at` as "%m-%d %H:%M", twice as fast as strftime (two per timeline bar)."""
    return f"{at.month:02d}-{at.day:02d} {at.hour:02d}:{at.minute:02d}"


def _segment_hover(seg: SegmentView) -> str:
    end = _clock(seg.ended_at) if seg.ended_at else "now"
    steps = f"{seg.start_step} → {seg.end_step if seg.end_step is not None else '…'}"
    return (
        f"{seg.job_id} epoch {seg.epoch}: {seg.outcome}<br>{seg.cluster}/{seg.partition}"
        f" allocation {seg.allocation_id} (SLURM {seg.scheduler_id or '-'})<br>"
        f"{_clock(seg.started_at)} → {end}, steps {steps}<br>{seg.reason or ''}"
    )


def _queue_bars(snapshot: RelaySnapshot) -> Trace:
    lane_of = {s.allocation_id: s.job_id for s in snapshot.segments}
    queued = [a for a in snapshot.allocations if a.id in lane_of and a.queue_wait_s > 0]
    return Trace(
        type="bar",
        name="queue wait",
        orientation="h",
        y=[lane_of[a.id] for a in queued],
        base=[a.submitted_at.isoformat() for a in queued],
        x=[a.queue_wait_s * 1000 for a in queued],
        marker=Marker(color=QUEUE_COLOUR),
        hovertext=[
            f"{a.cluster}/{a.partition} allocation {a.id}: queued {a.queue_wait_s / 60:.0f} min"
            for a in queued
        ],
        hoverinfo="text",
    )


def progress(snapshot: RelaySnapshot) -> Figure:
    """Each job's fraction done over time (segment by segment), dashed to its ETA."""
    totals = {j.id: j.total_steps for j in snapshot.jobs if j.total_steps}
    xs: list[str | float | None] = []
    ys: list[str | float | None] = []
    names: list[str | None] = []
    for seg in sorted(snapshot.segments, key=lambda s: (s.job_id, s.epoch)):
        total = totals.get(seg.job_id)
        if not total or seg.end_step is None:
            continue
        end = seg.ended_at or snapshot.generated_at
        xs += [seg.started_at.isoformat(), end.isoformat(), None]
        ys += [seg.start_step / total, seg.end_step / total, None]
        names += [seg.job_id, seg.job_id, None]
    eta_x: list[str | float | None] = []
    eta_y: list[str | float | None] = []
    basis: list[str | None] = []
    for job in snapshot.jobs:
        if job.eta is None or job.fraction is None:
            continue
        finish = snapshot.generated_at + timedelta(seconds=job.eta.total_s)
        eta_x += [snapshot.generated_at.isoformat(), finish.isoformat(), None]
        eta_y += [job.fraction, 1.0, None]
        basis += [f"{job.id}: {job.eta.basis}"] * 2 + [None]
    data = [
        Trace(type="scatter", name="done", x=xs, y=ys, mode="lines", hovertext=names),
        Trace(
            type="scatter", name="ETA", x=eta_x, y=eta_y, mode="lines+markers",
            line=Line(dash="dash"), hovertext=basis, hoverinfo="text",
        ),
    ]  # fmt: skip
    yaxis = Axis(tickformat=".0%", range=[0, 1.05])
    return Figure(
        data=data, layout=_layout("Progress and ETA", xaxis=Axis(type="date"), yaxis=yaxis)
    )


def gpu_hours(snapshot: RelaySnapshot) -> Figure:
    """Allocated vs simulating GPU-hours per cluster: the relay's efficiency."""
    clusters: list[Value] = list(snapshot.usage_by_cluster)
    usage = list(snapshot.usage_by_cluster.values())
    allocated: list[Value] = [u.allocated_gpu_s / 3600 for u in usage]
    simulating: list[Value] = [u.simulating_gpu_s / 3600 for u in usage]
    data = [
        Trace(type="bar", name="allocated", x=clusters, y=allocated),
        Trace(type="bar", name="simulating", x=clusters, y=simulating),
    ]
    layout = _layout(
        "GPU-hours per cluster: allocated vs simulating",
        barmode="group",
        yaxis=Axis(title=titled("GPU-hours")),
    )
    return Figure(data=data, layout=layout)


def handoff_losses(snapshot: RelaySnapshot) -> Figure:
    """Seconds from a handoff to the successor's first step, by the cluster it moved to."""
    gaps = handoff_gaps(snapshot)
    data = []
    for cluster in sorted({g.to_cluster for g in gaps}):
        mine = [g for g in gaps if g.to_cluster == cluster]
        data.append(
            Trace(
                type="box", name=f"to {cluster}", y=[g.lost_s for g in mine], boxpoints="all",
                hovertext=[f"{g.job_id} epoch {g.epoch} from {g.from_cluster}" for g in mine],
            )
        )  # fmt: skip
    layout = _layout("Lost seconds per handoff", yaxis=Axis(title=titled("seconds")))
    return Figure(data=data, layout=layout)


def queue_wait_distribution(snapshot: RelaySnapshot) -> Figure:
    data = [
        Trace(type="box", name=where, y=[w / 60 for w in waits], boxpoints="all")
        for where, waits in queue_waits(snapshot).items()
    ]
    layout = _layout("Queue wait per cluster/partition", yaxis=Axis(title=titled("minutes")))
    return Figure(data=data, layout=layout)


def failures(snapshot: RelaySnapshot) -> Figure:
    causes = failure_causes(snapshot)
    outcomes = sorted({c.outcome for c in causes})
    data = [
        Trace(
            type="bar", name=str(outcome), orientation="h",
            marker=Marker(color=OUTCOME_COLOURS[outcome]),
            y=[c.reason for c in causes if c.outcome == outcome],
            x=[float(c.segments) for c in causes if c.outcome == outcome],
        )
        for outcome in outcomes
    ]  # fmt: skip
    layout = _layout(
        "Failures by classified cause",
        height=max(300, 120 + 40 * len(causes)),
        barmode="stack",
        xaxis=Axis(title=titled("segments")),
        yaxis=Axis(type="category"),
    )
    return Figure(data=data, layout=layout)


CHARTS = (
    ("timeline", timeline),
    ("progress", progress),
    ("gpu-hours", gpu_hours),
    ("handoff-losses", handoff_losses),
    ("queue-waits", queue_wait_distribution),
    ("failures", failures),
)
