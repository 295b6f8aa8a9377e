"""`relaymd status`: the typer command; the work is in relaymd.cli.status_view, which
`relaymd.cli.main.main` also calls directly (without typer) for a plain `relaymd status`."""

from __future__ import annotations

from typing import Annotated

import typer

from relaymd.cli.cmd_views import IntervalOpt, WatchOpt


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: WatchOpt = False,
    interval: IntervalOpt = 2.0,
) -> None:
    """Jobs per state, clusters, throughput and the daemon's last cycle, in one screen.

    Reads only the local state file, so it answers instantly even when every cluster is
    unreachable; what it shows is what the daemon last saw.

    \b
    Examples:
      relaymd status
      relaymd status --json | jq .jobs
      relaymd status --watch --interval 5
    """
    if watch:
        from relaymd.cli.cmd_views import watch_relay

        watch_relay(None, interval)
        return
    from relaymd.cli.status_view import show_status

    show_status(as_json)
