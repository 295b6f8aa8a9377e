"""What an action command (cancel, requeue, hold, release, enable, disable, daemon start/stop)
did, printed as one sentence or, with --json, as one object."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from relaymd.models.base import utcnow


class ActionResult(BaseModel):
    action: str  # the command: "cancel", "enable", "daemon_start", ...
    target: str  # a job id, a cluster name, or "daemon"
    outcome: str  # a stable word for scripts: "cancelled", "cancel_requested", "already_held"
    message: str  # the sentence a person reads
    pid: int | None = None  # daemon start/stop
    at: datetime = Field(default_factory=utcnow)


def report(result: ActionResult, as_json: bool) -> None:
    if as_json:
        from relaymd.cli.output import print_json

        print_json(result)
    else:
        print(f"{result.target}: {result.message}" if result.target != "daemon" else result.message)
