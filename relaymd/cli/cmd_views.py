"""`relaymd report`, `relaymd dashboard` and the `--watch` of `status` / `jobs show`: views
of the relay from the state file alone (no cluster, no daemon needed)."""

from __future__ import annotations


def watch_relay(job_prefix: str | None, interval_s: float) -> None:
    """The live view of every job, or of the one job `job_prefix` names."""
    from relaymd.cli import context
    from relaymd.cli.output import console
    from relaymd.models import utcnow
    from relaymd.views.snapshot import take_snapshot
    from relaymd.views.watch import watch

    store = context.open_state()
    job_ids = [context.find_job(store, job_prefix).id] if job_prefix is not None else None
    watch(lambda: take_snapshot(store, utcnow(), job_ids), interval_s, console())
