"""The refresh loop of `status --watch` / `jobs show --watch`: a rich Live screen redrawn
every interval from the state file, quit with q or Ctrl-C; plain lines when stdout is not a
terminal (a log, a pipe)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from relaymd.views.screen import plain_lines, render

if TYPE_CHECKING:
    from rich.console import Console

    from relaymd.views.snapshot import RelaySnapshot

QUIT_KEYS = ("q", "Q")


def watch(take: Callable[[], RelaySnapshot], interval_s: float, out: Console) -> None:
    """Show `take()` every `interval_s` seconds until q, Ctrl-C or end of input."""
    try:
        if out.is_terminal:
            _live(take, interval_s, out)
        else:
            _plain(take, interval_s, out)
    except KeyboardInterrupt:
        pass  # Ctrl-C is the ordinary way out, like q


def _plain(take: Callable[[], RelaySnapshot], interval_s: float, out: Console) -> None:
    stop = threading.Event()
    while True:
        for line in plain_lines(take()):
            out.print(line, soft_wrap=True, markup=False, highlight=False)
        out.file.flush()
        if stop.wait(interval_s):
            return


def _live(take: Callable[[], RelaySnapshot], interval_s: float, out: Console) -> None:
    from rich.live import Live

    footer = f"refreshing every {interval_s:g} s from the state file; q or Ctrl-C quits"
    with _keys() as read_key, Live(console=out, screen=True, auto_refresh=False) as live:
        while True:
            live.update(render(take(), footer), refresh=True)
            if read_key(interval_s) in QUIT_KEYS:
                return


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """A key reader with a timeout: stdin in cbreak mode while watching (restored after);
    without a terminal on stdin it only waits."""
    if not sys.stdin.isatty():
        never = threading.Event()

        def wait_only(timeout: float) -> str | None:
            never.wait(timeout)
            return None

        yield wait_only
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read_key(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(fd, 32).decode(errors="replace")
        return data[-1:] if data else "q"  # end of input quits

    try:
        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
