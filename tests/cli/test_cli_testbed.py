"""The operator's workflow through the real `relaymd` CLI against the two-cluster testbed.

Real sshd with strict host keys, real SLURM with accounting, moto S3 over HTTP, a real OpenMM
worker: `clusters test`, `submit`, `daemon start`, `workers list`, `jobs history`,
`jobs download`, `daemon stop`, as a user would type them.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from relaymd.demo.water_box import write_water_box
from tests.support.cli_env import CliEnv
from tests.testbed.testbed import Testbed, relay_config, require_testbed, worker_code_copy

pytestmark = [pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def testbed_cli(cli: CliEnv) -> tuple[CliEnv, Testbed, dict[str, Any]]:
    tb = require_testbed()
    code = worker_code_copy()
    config = relay_config(cli.root, tb, f"c{secrets.token_hex(4)}", code)
    cli.config.write_text(yaml.safe_dump(config))
    cli.env.update(
        RELAYMD_S3_ACCESS_KEY_ID=tb.s3_access_key_id,
        RELAYMD_S3_SECRET_ACCESS_KEY=tb.s3_secret_access_key,
    )
    yield cli, tb, config
    cli.run("daemon", "stop", timeout=60)
    shutil.rmtree(code, ignore_errors=True)


def _wait_job(cli: CliEnv, job_id: str, states: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = cli.json("jobs", "show", job_id)
        if job["state"] in states:
            return job
        time.sleep(2)
    log = cli.run("daemon", "status").stdout
    raise AssertionError(f"job {job_id} still {job.get('state')} after {timeout} s\n{log}")


def test_clusters_test_passes_and_names_a_rejected_host_key(
    testbed_cli: tuple[CliEnv, Testbed, dict[str, Any]],
) -> None:
    cli, tb, config = testbed_cli
    for cluster in tb.clusters:
        done = cli.run("clusters", "test", cluster.name, "--json", timeout=60)
        assert done.returncode == 0, (done.stdout, done.stderr)
        report = json.loads(done.stdout)
        assert report["ok"] is True
        assert {"sbatch", "squeue", "sacct", "scratch", "storage"} <= {
            c["name"] for c in report["checks"]
        }

    # An empty known_hosts: the host key is unknown, so nothing is trusted.
    empty = cli.root / "known_hosts.empty"
    empty.write_text("")
    config["clusters"][0]["ssh"]["known_hosts"] = str(empty)
    cli.config.write_text(yaml.safe_dump(config))
    done = cli.run("clusters", "test", tb.clusters[0].name, timeout=60)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "host key" in done.stderr and str(empty) in done.stderr
    assert "Traceback" not in done.stderr


def test_submit_relay_and_download_through_the_cli(
    testbed_cli: tuple[CliEnv, Testbed, dict[str, Any]],
) -> None:
    cli, tb, _ = testbed_cli
    target = tb.clusters[1].name
    job_dir = cli.root / "water"
    box = write_water_box(job_dir, 1.6, seed=3, platform="Reference", pme=False, timing_steps=100)
    assert box.steps_per_second is not None
    # The engine's details in the directory's spec file, the rest as flags on top of it.
    spec = {
        "engine": {
            "kind": "openmm",
            "total_steps": 100,
            "report_every_steps": 50,
            "dcd_every_steps": 100,
            "platform": "Reference",
        },
        "checkpoint_interval_s": 4,
    }
    (job_dir / "relaymd.yaml").write_text(yaml.safe_dump(spec))
    # About 10 s of compute: one segment, or two if the machine is busy.
    steps = max(400, int(box.steps_per_second * 10) // 100 * 100)
    submitted = cli.json(
        "submit",
        str(job_dir),
        "--steps",
        str(steps),
        "--gpus",
        "0",
        "--cluster",
        target,
        "--title",
        "cli on the testbed",
    )
    assert submitted["failed"] == []
    [job] = submitted["submitted"]
    job_id = job["job_id"]
    assert cli.json("jobs", "show", job_id)["spec"]["engine"]["dcd_every_steps"] == 100

    started = cli.run("daemon", "start", timeout=60)
    assert started.returncode == 0, started.stderr
    done = _wait_job(cli, job_id, {"completed", "failed", "cancelled"}, timeout=420)
    assert done["state"] == "completed", done

    history = cli.json("jobs", "history", job_id)
    segments = history["segments"]
    assert segments and {s["cluster"] for s in segments} == {target}
    assert segments[-1]["outcome"] == "completed" and segments[-1]["end_step"] == steps

    workers = cli.json("workers", "list", "--all", "--cluster", target)
    ran = [w for w in workers if w["id"] in {s["allocation_id"] for s in segments}]
    assert ran and all(w["cluster"] == target and w["scheduler_id"] for w in ran)

    status = cli.json("status")
    assert {k: v for k, v in status["jobs"].items() if v} == {"completed": 1}
    assert status["daemon"] is not None

    dest = cli.root / "download"
    fetched = cli.json("jobs", "download", job_id, "--dest", str(dest))
    assert fetched["verified"] == len(fetched["files"]) > 0
    assert list((dest / "outputs").rglob("trajectory.*.dcd"))
    assert fetched["checkpoint_dir"] and (Path(fetched["checkpoint_dir"]) / "state.xml").is_file()

    stopped = cli.run("daemon", "stop", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    after = cli.run("daemon", "status", "--json")
    assert after.returncode == 1 and json.loads(after.stdout)["running"] is False
