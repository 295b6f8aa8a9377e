"""`relaymd report` and `relaymd dashboard` rendered from a realistic state file and opened
in a real headless chromium with no network: no console errors, every chart drawn, one bar
per segment (coloured by its outcome) and per queue wait. Screenshots are kept under the
test's tmp dir (pytest's basetemp) as artefacts."""

from __future__ import annotations

import signal
import struct
import subprocess
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from relaymd.views.figures import OUTCOME_COLOURS, QUEUE_COLOUR
from tests.cli.browser import Rendered, bar_fills, chart, render, screenshot
from tests.support.cli_env import RELAYMD, CliEnv
from tests.support.relay_history import PLAN, build_history

CHARTS = ("timeline", "progress", "gpu-hours", "handoff-losses", "queue-waits", "failures")


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _check_page(page: Rendered) -> None:
    assert page.console == []  # no error, no failed fetch, no warning
    for name in CHARTS:
        assert 'class="main-svg"' in chart(page.dom, name), f"chart {name} not drawn"
    fills = Counter(bar_fills(chart(page.dom, "timeline")))
    planned = Counter(outcome for _, plan in PLAN.values() for _, outcome, _ in plan)
    segments = sum(planned.values())
    queue = _rgb("#a0a0a0")  # QUEUE_COLOUR without its alpha
    assert QUEUE_COLOUR.startswith("rgba(160,160,160")
    assert fills[queue] == segments  # every segment's allocation waited in a queue first
    for outcome, count in planned.items():
        assert fills[_rgb(OUTCOME_COLOURS[outcome])] == count, outcome
    assert sum(fills.values()) == 2 * segments
    assert "engine error: NaN in coordinates" in page.dom  # the failures table
    assert "handoffs x ~19 min queue" in page.dom  # the ETA with its basis


def test_report_html_is_self_contained_and_renders_every_view(cli: CliEnv, tmp_path: Path) -> None:
    build_history(cli.db)
    report = tmp_path / "out" / "report.html"
    report.parent.mkdir()
    done = cli.run("report", "-o", str(report))
    assert done.returncode == 0, done.stderr
    assert "<script src=" not in report.read_text()  # plotly.js is inlined, nothing fetched
    page = render(report.as_uri(), tmp_path / "profile")
    _check_page(page)
    screenshot(report.as_uri(), tmp_path / "profile", tmp_path / "report.png")


def test_report_of_chosen_jobs_has_only_their_segments(cli: CliEnv, tmp_path: Path) -> None:
    build_history(cli.db)
    report = tmp_path / "two.html"
    assert cli.run("report", "jdone", "jfa", "-o", str(report)).returncode == 0
    fills = bar_fills(chart(render(report.as_uri(), tmp_path / "p").dom, "timeline"))
    assert len(fills) == 2 * (len(PLAN["jdone"][1]) + len(PLAN["jfail"][1]))


def test_report_timeline_as_svg_and_png(cli: CliEnv, tmp_path: Path) -> None:
    build_history(cli.db)
    svg, png = tmp_path / "timeline.svg", tmp_path / "timeline.png"
    assert cli.run("report", "--format", "svg", "-o", str(svg)).returncode == 0
    assert cli.run("report", "--format", "png", "-o", str(png)).returncode == 0
    assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width > 1000 and height > 300
    bad = cli.run("report", "--format", "pdf", "-o", str(tmp_path / "x.pdf"))
    assert bad.returncode == 2 and "--format 'pdf'" in bad.stderr
    assert not (tmp_path / "x.pdf").exists()


class Dashboard:
    def __init__(self, cli: CliEnv, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(RELAYMD), "dashboard", "--port", "0", "--refresh", "3600", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli.env,
            cwd=cli.root,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # waits for the server to listen
        assert line.startswith("dashboard on http://127.0.0.1:"), line + self.proc.stderr.read()
        self.base = line.split()[2].split("?")[0]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        return self.proc.wait(timeout=60)


def test_dashboard_serves_the_views_read_only_and_stops_on_ctrl_c(
    cli: CliEnv, tmp_path: Path
) -> None:
    build_history(cli.db)
    before = cli.db.read_bytes()
    server = Dashboard(cli)
    try:
        page = render(server.base, tmp_path / "profile")
        _check_page(page)
        assert '<meta http-equiv="refresh" content="3600">' in page.dom
        screenshot(server.base, tmp_path / "profile", tmp_path / "dashboard.png")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.base + "nothing-here", timeout=60)
        assert missing.value.code == 404
    finally:
        assert server.stop() == 0
    assert cli.db.read_bytes() == before  # read-only


def test_dashboard_with_a_token_answers_only_requests_that_carry_it(
    cli: CliEnv, tmp_path: Path
) -> None:
    build_history(cli.db)
    server = Dashboard(cli, "--token", "s3cret-token")
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.base, timeout=60)
        assert refused.value.code == 403
        page = render(server.base + "?token=s3cret-token", tmp_path / "profile")
        _check_page(page)
    finally:
        assert server.stop() == 0


def test_dashboard_refuses_a_non_loopback_bind_without_a_token(cli: CliEnv) -> None:
    build_history(cli.db)
    done = cli.run("dashboard", "--host", "0.0.0.0")
    assert done.returncode == 2
    assert "--host 0.0.0.0 is not a loopback address" in done.stderr
    assert "--token" in done.stderr and "Traceback" not in done.stderr


def test_views_without_a_state_file_say_so(cli: CliEnv, tmp_path: Path) -> None:
    done = cli.run("report", "-o", str(tmp_path / "r.html"))
    assert done.returncode == 4
    assert "no state file at" in done.stderr
    assert not cli.db.exists()  # a view never creates it


def test_dashboard_says_503_while_the_state_file_is_gone(cli: CliEnv) -> None:
    build_history(cli.db)
    server = Dashboard(cli)
    try:
        cli.db.rename(cli.db.with_name("moved.sqlite"))
        with pytest.raises(urllib.error.HTTPError) as gone:
            urllib.request.urlopen(server.base, timeout=60)
        assert gone.value.code == 503
        assert b"cannot read the state file" in gone.value.read()
        cli.db.with_name("moved.sqlite").rename(cli.db)
        with urllib.request.urlopen(server.base, timeout=60) as page:
            assert page.status == 200
    finally:
        assert server.stop() == 0
    assert server.proc.stderr is not None
    assert "Traceback" not in server.proc.stderr.read()
