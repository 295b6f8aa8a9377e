"""Debian's chromium, headless and cut off from every network name, as the judge of a page:
the DOM after its scripts ran, its console messages, a screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CONSOLE = re.compile(r":CONSOLE[:(\d]*\]? ?(.*)")
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # any fetch elsewhere fails
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=15000",  # run the page's scripts to quiescence, not a wall clock
    "--window-size=1400,2600",
)


@dataclass
class Rendered:
    dom: str
    console: list[str]  # every console message and uncaught error of the page


def need_chromium() -> str:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (.ci/run does)")
    return CHROMIUM


def render(url: str, profile: Path) -> Rendered:
    done = subprocess.run(
        [need_chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    messages = [m.group(1) for m in map(CONSOLE.search, done.stderr.splitlines()) if m]
    return Rendered(dom=done.stdout, console=messages)


def screenshot(url: str, profile: Path, target: Path) -> None:
    done = subprocess.run(
        [need_chromium(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={target}", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def chart(dom: str, div_id: str) -> str:
    """The rendered markup of one chart: from its div to the next chart's."""
    start = dom.index(f'id="{div_id}"')
    end = dom.find('<div class="chart">', start)
    return dom[start : end if end != -1 else len(dom)]


def bar_fills(markup: str) -> list[str]:
    """The fill colour of every bar plotly drew (one `point` path per bar)."""
    paths = re.findall(r'<g class="point"><path[^>]*style="([^"]*)"', markup)
    return [m.group(1) for m in (re.search(r"fill: (rgb[^;]*);", p) for p in paths) if m]
