"""`relaymd status --watch` in a real terminal (a pty): it shows progress, refreshes from the
state file, and quits on q. Every wait is on screen content, never on a clock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time

from relaymd.state import StateStore
from tests.support.cli_env import RELAYMD, CliEnv
from tests.support.relay_history import build_history

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")
WAIT_S = 60.0  # generous: only a hang reaches it


class Terminal:
    """The master side of a pty with a process on its slave side; `screen` is what it drew."""

    def __init__(self, cli: CliEnv, *args: str) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
        env = {k: v for k, v in cli.env.items() if k != "COLUMNS"} | {"TERM": "xterm-256color"}
        self.proc = subprocess.Popen(
            [str(RELAYMD), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cli.root,
            start_new_session=True,  # then the pty becomes its controlling terminal: Ctrl-C works
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.master = master
        self.raw = b""

    @property
    def screen(self) -> str:
        return ANSI.sub(b"", self.raw).decode(errors="replace")

    def wait_for(self, text: str, after: int = 0) -> int:
        """Read until `text` appears past offset `after` of the screen; where it ends."""
        while text not in self.screen[after:]:
            ready, _, _ = select.select([self.master], [], [], WAIT_S)
            assert ready, f"no {text!r} on the screen: {self.screen[-2000:]}"
            try:
                self.raw += os.read(self.master, 65536)
            except OSError:  # the process closed the terminal
                break
        assert text in self.screen[after:], self.screen[-2000:]
        return after + self.screen[after:].index(text) + len(text)

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())

    def close(self) -> int:
        """Wait for the process to exit, reading what it still draws (so it never blocks on a
        full terminal); fails if it is still running after WAIT_S, a hang guard only."""
        give_up = time.monotonic() + WAIT_S
        while self.proc.poll() is None:
            assert time.monotonic() < give_up, f"still running: {self.screen[-2000:]}"
            ready, _, _ = select.select([self.master], [], [], 1.0)
            if ready:
                with contextlib.suppress(OSError):  # the process closed the terminal
                    self.raw += os.read(self.master, 65536)
        os.close(self.master)
        return self.proc.returncode


def test_status_watch_shows_progress_refreshes_from_the_state_file_and_quits_on_q(
    cli: CliEnv,
) -> None:
    history = build_history(cli.db)
    term = Terminal(cli, "status", "--watch", "--interval", "0.5")
    seen = term.wait_for("225000/1000000")  # the running job's steps
    term.wait_for("22%")
    term.wait_for("~19 min queue")  # the ETA with its queue basis
    term.wait_for("beta: reachable, 1 pending")
    # The daemon is not running: the view reads what another writer puts in the file.
    with StateStore.open(cli.db) as store:
        job = store.get_job(history.running_job)
        assert job is not None
        store.update_job(job.model_copy(update={"step": 500_000}))
    term.wait_for("500000/1000000", seen)
    term.wait_for("50%", seen)
    term.press("q")
    assert term.close() == 0
    assert "Traceback" not in term.screen


def test_jobs_show_watch_follows_one_job_and_quits_on_ctrl_c(cli: CliEnv) -> None:
    build_history(cli.db)
    term = Terminal(cli, "jobs", "show", "jsto", "--watch")
    term.wait_for("200000/1000000")
    term.wait_for("8 handoffs x ~19 min queue")
    term.press("\x03")  # Ctrl-C: the terminal sends SIGINT
    assert term.close() == 0
    assert "jrun" not in term.screen


def test_status_watch_to_a_pipe_prints_plain_lines(cli: CliEnv) -> None:
    build_history(cli.db)
    proc = subprocess.Popen(
        [str(RELAYMD), "status", "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        env=cli.env,
        cwd=cli.root,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while len([line for line in lines if line.startswith("-- relay at")]) < 2:
        lines.append(proc.stdout.readline())
    proc.terminate()
    proc.wait(timeout=WAIT_S)
    text = "".join(lines)
    assert "\x1b[" not in text  # no cursor movement or colour in a log
    assert "job jrun running 22% steps 225000/1000000" in text
    assert "eta ~" in text and "handoffs x ~19 min queue" in text


def test_history_to_a_pipe_never_cuts_the_outcome_or_the_reason(cli: CliEnv) -> None:
    """The demo printed `complet…` when stdout was not a terminal: a pipe has no width."""
    build_history(cli.db)
    for job_id, outcome, reason in (
        ("jdone", "completed", "walltime handoff"),
        ("jrun", "lost", "heartbeat stale: node failure"),
        ("jcancel", "cancelled", "cancelled by operator"),
    ):
        done = cli.run("jobs", "history", job_id, env={"COLUMNS": "60"})
        assert done.returncode == 0, done.stderr
        assert "…" not in done.stdout.replace("→ …", "")  # only a running segment's open end
        assert f" {outcome} " in done.stdout
        assert reason in done.stdout
