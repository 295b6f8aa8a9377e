"""`relaymd daemon run|start|stop|status`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from relaymd.cli.context import read_pid  # lives there so `relaymd status` skips typer
from relaymd.cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from relaymd.models import DaemonStatus

app = typer.Typer(
    help="The reconcile daemon: one process on this workstation drives every cluster.\n\n"
    "\b\nExamples:\n  relaymd daemon run            # foreground, logs to stderr (systemd)\n"
    "  relaymd daemon start          # background, logs to the daemon log file\n"
    "  relaymd daemon status --json\n  relaymd daemon stop",
    no_args_is_help=True,
)


@app.command("run")
def run(
    max_cycles: Annotated[
        int | None,
        typer.Option(help="Stop after this many reconcile cycles (testing).", show_default=False),
    ] = None,
    log_file: Annotated[
        Path | None,
        typer.Option(
            help="Log to this file, rotated by size (RELAYMD_LOG_MAX_BYTES, default 20 MiB; "
            "RELAYMD_LOG_BACKUPS old files, default 5); stderr goes there too.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT (for systemd or a terminal).

    \b
    Examples:
      relaymd daemon run
      relaymd --config ~/relaymd.yaml daemon run   # e.g. ExecStart= of a systemd unit
      relaymd --debug daemon run --max-cycles 3    # a few cycles with debug logs
      relaymd daemon run --log-file ~/relaymd.log  # rotated; what `daemon start` does
    """
    import sys

    from relaymd.cli import context
    from relaymd.daemon import DaemonAlreadyRunning, run_daemon_blocking
    from relaymd.logging import configure

    loaded = context.load()
    if read_pid() is not None:
        raise CliError(
            f"a daemon is already running (pid {read_pid()})",
            hint="`relaymd daemon stop` first, or use `relaymd daemon status`",
            code=ExitCode.CONFLICT,
        )
    import os

    if not context.OPTIONS.debug and os.environ.get("RELAYMD_LOG_LEVEL") == "WARNING":
        os.environ["RELAYMD_LOG_LEVEL"] = "INFO"  # the daemon's log is its interface
    configure(log_file=log_file, capture_stdio=log_file is not None)
    try:
        run_daemon_blocking(loaded, interactive=sys.stdin.isatty(), max_cycles=max_cycles)
    except DaemonAlreadyRunning as exc:
        raise CliError(str(exc), code=ExitCode.CONFLICT) from None


@app.command("start")
def start(
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the daemon to take its lock.")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Start the daemon in the background; its log goes to the daemon log file.

    \b
    Examples:
      relaymd daemon start
      relaymd daemon start --wait 30   # wait up to 30 s for it to take its lock
    """
    import os
    import subprocess
    import time

    from relaymd import paths
    from relaymd.cli import context
    from relaymd.cli.action_result import ActionResult, report
    from relaymd.executables import relaymd_command

    context.load()  # fail here, not in the background, on a bad config
    existing = read_pid()
    if existing is not None:
        raise CliError(f"a daemon is already running (pid {existing})", code=ExitCode.CONFLICT)
    log_path = paths.daemon_log()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = relaymd_command()
    if context.OPTIONS.config_path is not None:
        argv += ["--config", str(context.OPTIONS.config_path)]
    argv += ["daemon", "run", "--log-file", str(log_path)]
    with open(log_path, "ab") as log_file, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            argv, stdin=devnull, stdout=log_file, stderr=log_file, start_new_session=True
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CliError(
                f"the daemon exited at start (code {process.returncode})",
                hint=f"see the end of {log_path}",
            )
        if read_pid() == process.pid:
            message = f"daemon started (pid {process.pid}); log: {log_path}"
            outcome = "started"
            break
        time.sleep(0.1)
    else:
        message = f"daemon starting (pid {process.pid}); log: {log_path}"
        outcome = "starting"
    result = ActionResult(
        action="daemon_start", target="daemon", outcome=outcome, message=message, pid=process.pid
    )
    report(result, as_json)


@app.command("stop")
def stop(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a clean exit.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Send SIGTERM to the daemon and wait until it has exited.

    \b
    Examples:
      relaymd daemon stop
      relaymd daemon stop --timeout 300   # a cycle waiting on a slow cluster
    """
    import os
    import signal
    import time

    from relaymd.cli.action_result import ActionResult, report

    def done(outcome: str, message: str, pid: int | None) -> None:
        result = ActionResult(
            action="daemon_stop", target="daemon", outcome=outcome, message=message, pid=pid
        )
        report(result, as_json)

    pid = read_pid()
    if pid is None:
        done("not_running", "daemon not running", None)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            done("stopped", f"daemon stopped (pid {pid})", pid)
            return
        time.sleep(0.1)
    raise CliError(
        f"the daemon (pid {pid}) did not exit within {timeout:.0f} s",
        hint=f"it may be waiting on a slow cluster; wait longer or `kill -9 {pid}`",
    )


@app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Whether the daemon runs, and its last reconcile cycle. Exit 1 when it is not running.

    \b
    Examples:
      relaymd daemon status
      relaymd daemon status --json | jq .running
      relaymd daemon status >/dev/null || relaymd daemon start
    """
    from relaymd import paths
    from relaymd.cli import context
    from relaymd.cli.output import print_json

    pid = read_pid()
    daemon = context.open_state().get_daemon_status()
    if as_json:
        print_json(
            {
                "running": pid is not None,
                "pid": pid,
                "log": str(paths.daemon_log()),
                "status": daemon,
            }
        )
    else:
        print(f"daemon: {f'running (pid {pid})' if pid else 'not running'}")
        if daemon is not None:
            for line in _describe(daemon):
                print(line)
        print(f"log: {paths.daemon_log()}")
    if pid is None:
        raise typer.Exit(int(ExitCode.FAILED))


def _describe(daemon: DaemonStatus) -> list[str]:
    return [f"  {k}: {v}" for k, v in daemon.model_dump().items() if v is not None]
