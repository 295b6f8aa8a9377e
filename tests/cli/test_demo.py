"""The README's quickstart, `relaymd demo`, as a test: a real OpenMM job relayed locally."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import mdtraj
import pytest

from tests.support.cli_env import RELAYMD, REPO, CliEnv


@pytest.mark.slow
def test_demo_relays_a_job_across_at_least_three_segments(cli: CliEnv) -> None:
    env = {k: v for k, v in cli.env.items() if k != "RELAYMD_CONFIG"}  # the embedded default
    done = subprocess.run(
        [str(RELAYMD), "demo", "--state-dir", str(cli.state_dir), "--data-dir", str(cli.data_dir)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    # The hint names the demo's folders, so it works when pasted as printed.
    hint = f"RELAYMD_STATE_DIR={cli.state_dir} RELAYMD_DATA_DIR={cli.data_dir} relaymd jobs"
    assert f"{hint} download" in done.stdout, done.stdout[-2000:]

    [job] = cli.json("jobs", "list")
    assert job["state"] == "completed"
    history = cli.json("jobs", "history", job["id"])
    segments = history["segments"]
    assert len(segments) >= 3
    assert [s["epoch"] for s in segments] == sorted({s["epoch"] for s in segments})
    assert [s["outcome"] for s in segments[:-1]] == ["handoff"] * (len(segments) - 1)
    assert segments[-1]["outcome"] == "completed"
    assert segments[-1]["end_step"] == job["total_steps"]
    # Times from the worker's own events (first MD step -> terminal event), on the daemon clock.
    assert {s["times_from"] for s in segments} == {"worker"}
    assert all(s["started"] <= s["ended"] for s in segments)
    # Each segment resumed where the previous one handed off.
    for before, after in itertools.pairwise(segments):
        assert after["start_step"] == before["end_step"]
    outputs = cli.data_dir / "storage" / "jobs" / job["id"] / "outputs"
    assert outputs.is_dir() and any(outputs.rglob("*"))

    # The printed download hint, assembled: one trajectory with the water box's atom names
    # (the demo ships topology.pdb and names it in its spec), frames and rows in step order.
    dest = cli.root / "results"
    fetched = subprocess.run(
        [str(RELAYMD), "jobs", "download", job["id"], "--dest", str(dest), "--assemble", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fetched.returncode == 0, fetched.stderr
    assembled = json.loads(fetched.stdout)["assembled"]
    assert (assembled["first_step"], assembled["last_step"]) == (0, job["total_steps"])
    traj = mdtraj.load(assembled["trajectory"], top=assembled["topology"])
    assert traj.n_frames == job["total_steps"] // 1000 == assembled["frames"]
    assert {r.name for r in traj.topology.residues} == {"HOH"}
    rows = Path(assembled["state_data"]).read_text().splitlines()
    steps = [int(line.split(",")[0]) for line in rows[1:]]
    assert rows[0].startswith("#") and steps == list(range(500, job["total_steps"] + 1, 500))
