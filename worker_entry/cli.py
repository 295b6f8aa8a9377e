"""`relaymd-worker --alloc-dir <scratch>/alloc/<allocation_id>`, or `relaymd-worker slots
--slot-dir ...` for a multi-GPU allocation (worker_entry/slots.py): argparse only, so `--help`
works without OpenMM or any operator dependency."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from worker_entry.options import PLATFORMS, DeadlineError, WorkerOptions, resolve_deadline


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        return default


def _add_mailbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the mailbox is: a shared folder, or object storage (ADR 0022)."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--alloc-dir",
        type=Path,
        help="the allocation's mailbox folder, <scratch>/alloc/<allocation_id>",
    )
    where.add_argument(
        "--mailbox",
        help="the mailbox in object storage instead of a shared folder: "
        "s3://bucket/prefix/mailbox/<allocation_id> (keys and endpoint from AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION) or file:///path/mailbox/<id>",
    )
    parser.add_argument(
        "--mailbox-poll",
        type=float,
        default=10.0,
        help="with --mailbox: seconds between reads of the daemon's files (default 10)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaymd-worker",
        description="Run RelayMD relay segments inside one allocation. Reads assignment.json "
        "and control.json from the allocation folder, writes heartbeat.json and events.jsonl, "
        "and exchanges checkpoints with object storage.",
        epilog="A multi-GPU allocation runs `relaymd-worker slots --slot-dir DIR ... <these "
        "options>`: one worker per GPU slot (see `relaymd-worker slots --help`).",
    )
    _add_mailbox_arguments(parser)
    parser.add_argument(
        "--deadline",
        help="allocation end (ISO-8601 or unix time); default: $RELAYMD_DEADLINE, "
        "$SLURM_JOB_END_TIME, squeue, else none",
    )
    parser.add_argument(
        "--warning-lead",
        type=float,
        default=_env_float("RELAYMD_WARNING_LEAD_S", 0.0) or None,
        help="SIGUSR1 is SLURM's walltime warning, requested this many seconds before the end "
        "(--signal=B:USR1@N; default $RELAYMD_WARNING_LEAD_S): it corrects the deadline, never "
        "stops the segment by itself. SIGTERM always means checkpoint and stop now",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=_env_float("RELAYMD_HEARTBEAT_INTERVAL", 30.0),
        help="seconds between heartbeats (default 30, $RELAYMD_HEARTBEAT_INTERVAL)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        help="exit after this many seconds without an assignment (default 600)",
    )
    parser.add_argument("--margin-min", type=float, default=30.0, help="handoff margin floor (s)")
    parser.add_argument("--margin-max", type=float, default=900.0, help="handoff margin cap (s)")
    parser.add_argument(
        "--platform",
        choices=PLATFORMS,
        default=os.environ.get("RELAYMD_PLATFORM") or None,
        help="OpenMM platform (default $RELAYMD_PLATFORM, else the job's, "
        "else CUDA > OpenCL > CPU)",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="node-local scratch (default: a temp dir under $TMPDIR)"
    )
    return parser


def parse_options(argv: list[str] | None = None) -> WorkerOptions:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        deadline = resolve_deadline(args.deadline, dict(os.environ))
    except DeadlineError as exc:
        parser.error(str(exc))
    if args.margin_min > args.margin_max:
        parser.error("--margin-min must not exceed --margin-max")
    if args.mailbox_poll <= 0:
        parser.error("--mailbox-poll must be positive")
    # With --mailbox the folder is made (privately, locally) just before the worker starts.
    alloc_dir = args.alloc_dir or Path(str(args.mailbox).rstrip("/").rsplit("/", 1)[-1])
    return WorkerOptions(
        alloc_dir=alloc_dir.absolute(),
        mailbox_url=args.mailbox,
        mailbox_poll_s=args.mailbox_poll,
        deadline=deadline,
        warning_lead_s=args.warning_lead if args.warning_lead and args.warning_lead > 0 else None,
        heartbeat_interval_s=args.heartbeat_interval,
        idle_timeout_s=args.idle_timeout,
        margin_min_s=args.margin_min,
        margin_max_s=args.margin_max,
        platform=args.platform,
        work_dir=args.work_dir,
        poll_interval_s=min(0.5, max(0.05, args.heartbeat_interval / 4)),
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["slots"]:
        from worker_entry.slots import main as slots_main

        return slots_main(args[1:])
    options = parse_options(args)
    from worker_entry.worker import StartupError, run_worker

    try:
        if options.mailbox_url is not None:
            return _run_remote(options)
        return run_worker(options)
    except StartupError as exc:
        print(f"relaymd-worker: {exc}", file=sys.stderr)
        return 2


def _run_remote(options: WorkerOptions) -> int:
    from worker_entry.remote_mailbox import MailboxURLError, run_with_mailbox
    from worker_entry.worker import StartupError, run_worker

    assert options.mailbox_url is not None
    try:
        return run_with_mailbox(
            options.mailbox_url,
            options.mailbox_poll_s,
            options.idle_timeout_s,
            options.deadline,
            lambda local: run_worker(options.model_copy(update={"alloc_dir": local})),
        )
    except MailboxURLError as exc:
        raise StartupError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
