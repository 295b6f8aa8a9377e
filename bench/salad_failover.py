"""Failover time for an interrupted Salad replica at the shipped defaults (ADR 0025).

A real daemon, the SaladCloud stand-in (tests/support/salad_standin.py) with one replica (cap
1) that is a real `relaymd-worker --mailbox file://...` process running a tiny OpenMM job
(Reference platform, a checkpoint every 10 s). After its first checkpoint the replica is
SIGKILLed; the stand-in drops it from its instance list at its next reconcile (0.2 s) and,
as restart policy `always` does, starts a replacement on a new machine after
`--start-delay` seconds (SaladCloud's allocation and image download: not modelled by default,
see docs/benchmarks.md). Every RelayMD setting is the shipped default: polls 5-60 s (capped at
the 30 s heartbeat while workers are live), `stale_after_s` 75, `mailbox_poll_s` 10, worker
heartbeat 30 s. The figure is SIGKILL -> the job's `started` event on the replacement, with
the steps between read from outside the daemon where possible (the stand-in's record, the
bucket's object times, the worker's own event times; the daemon log for when it saw the
machine gone).

    .venv/bin/python -m bench.salad_failover [--start-delay 0 60] [--no-docs]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from bench._docs import write_section
from relaymd.mailbox.models import EventKind
from tests.support.salad_run import GROUP, RunSettings, SaladRun, salad_run, with_kind

SETTINGS = RunSettings(
    steps=2_000_000,  # far more than the run lasts: it is stopped once the job moved on
    checkpoint_s=10,
    daemon={},  # {}: the shipped defaults
    worker={},
    salad={"worker_args": ["--platform", "Reference"]},  # no GPU on this machine
)


class Timeline(BaseModel):
    """Seconds after the SIGKILL."""

    start_delay_s: float
    replacement_launched_s: float  # the stand-in started the next replica's container
    machine_gone_seen_s: float | None  # the daemon saw the machine missing (daemon log)
    adopted_s: float  # credentials written into the replacement's mailbox
    assigned_s: float  # the job's assignment written into it
    started_s: float  # the worker's `started` event (resumed from the checkpoint)


def _mtime(path: Path, t0: float) -> float:
    return path.stat().st_mtime - t0


def _gone_seen(log: Path, t0: float) -> float | None:
    """When the daemon first logged the killed replica's machine as gone."""
    for line in log.read_text(errors="replace").splitlines():
        if '"provider_machine_gone"' in line:
            at = datetime.fromisoformat(json.loads(line)["timestamp"])
            return at.timestamp() - t0
    return None


def measure(run: SaladRun, start_delay_s: float) -> Timeline:
    run.wait("a first checkpoint on the first replica", lambda: run.checkpoints() >= 1, 600)
    killed_box = with_kind(run.bucket, EventKind.CHECKPOINT)[-1][0]
    t0 = time.time()
    assert run.standin.kill_one(GROUP) is not None
    box, started = run.wait(
        "the job started on the replacement",
        lambda: next(((m, e) for m, e in run.mine(EventKind.STARTED) if m != killed_box), None),
        900,
    )
    # The container command names the mailbox salad-<SALAD_MACHINE_ID>-<unix time>.
    replicas = run.standin.groups[GROUP].replicas
    replacement = next(r for r in replicas if box.name.startswith(f"salad-{r.machine_id}-"))
    launched = datetime.fromisoformat(replacement.update_time).timestamp() - t0
    return Timeline(
        start_delay_s=start_delay_s,
        replacement_launched_s=launched,
        machine_gone_seen_s=_gone_seen(run.root / "daemon.log", t0),
        adopted_s=_mtime(box / "credentials", t0),
        assigned_s=_mtime(box / "assignment.json", t0),
        started_s=started.at.timestamp() - t0,
    )


ROWS = [
    ("replacement container started by the stand-in", "replacement_launched_s"),
    ("daemon saw the machine missing from the instance list", "machine_gone_seen_s"),
    ("daemon adopted the replacement (credentials written)", "adopted_s"),
    ("daemon bound the requeued job to it (assignment written)", "assigned_s"),
    ("**worker started the job from the checkpoint (`started`)**", "started_s"),
]


def render(timelines: list[Timeline]) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    head = " | ".join(f"start delay {t.start_delay_s:g} s" for t in timelines)
    lines = [f"| after the SIGKILL | {head} |", "|---" * (len(timelines) + 1) + "|"]
    for what, name in ROWS:
        values = " | ".join(cell(getattr(t, name)) for t in timelines)
        lines.append(f"| {what} | {values} |")
    return (
        f"`python -m bench.salad_failover`, {datetime.now(UTC):%Y-%m-%d}, shipped defaults, one "
        "run per stand-in replica start delay, busy two-core machine.\n\n" + "\n".join(lines)
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.salad_failover")
    parser.add_argument(
        "--start-delay", type=float, nargs="+", default=[0.0],
        help="the stand-in's replica start time(s) to run with, in seconds",
    )  # fmt: skip
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    timelines = []
    for delay in args.start_delay:
        settings = dataclasses.replace(SETTINGS, start_delay_s=delay)
        with tempfile.TemporaryDirectory() as tmp, salad_run(Path(tmp), settings) as run:
            timelines.append(measure(run, delay))
        print(timelines[-1].model_dump_json(), flush=True)
    body = render(timelines)
    print(body)
    if not args.no_docs:
        write_section("salad_failover", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
