"""Helpers for daemon end-to-end tests: a tiny OpenMM input, a config, a daemon process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from relaymd.demo.water_box import write_water_box
from relaymd.models import JobSpec, OpenMMSettings, Resources
from tests.support.waiting import poll_until

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def write_tiny_system(directory: Path, box_nm: float = 1.6, timing_steps: int = 100) -> float:
    """A small water box (a few hundred atoms) as serialized XML; returns Reference steps/s."""
    box = write_water_box(
        directory, box_nm, seed=7, platform="Reference", pme=False, timing_steps=timing_steps
    )
    assert box.steps_per_second is not None
    return box.steps_per_second


def write_spec(directory: Path, title: str, steps: int, checkpoint_s: float = 2.0) -> None:
    spec = JobSpec(
        title=title,
        engine=OpenMMSettings(
            total_steps=steps,
            report_every_steps=100,
            checkpoint_every_steps=None,
            platform="Reference",
        ),
        resources=Resources(gpus=0),
        checkpoint_interval_s=checkpoint_s,
        max_retries=3,
    )
    (directory / "relaymd.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))


def local_config(
    root: Path, *, walltime_s: float, native_worker: list[str] | None = None, **overrides: Any
) -> Path:
    config: dict[str, Any] = {
        "storage": {"url": (root / "storage").as_uri()},
        "state_path": str(root / "state" / "state.sqlite"),
        "clusters": [
            {
                "name": "local",
                "transport": "local",
                "scheduler": "direct",
                "scratch": str(root / "scratch"),
                "partitions": [
                    {
                        "name": "local",
                        "walltime_minutes": walltime_s / 60,
                        "gpus_per_allocation": 0,
                        "max_pending": 1,
                        "max_running": 1,
                    }
                ],
                "native_worker": native_worker or [sys.executable, "-m", "worker_entry"],
                "max_workers": 2,
                "command_timeout_s": 10,
                "poll": {"min_interval_s": 0.5, "max_interval_s": 1.0},
            }
        ],
        # Not 6: a worker on a loaded machine can take seconds to write its first heartbeat,
        # and these runs do not test hang detection.
        "daemon": {"stale_after_s": 20, "stop_grace_s": 4, "min_segment_s": 2},
        "worker": {
            "heartbeat_interval_s": 1,
            "idle_timeout_s": 4,
            "handoff_margin_min_s": 2,
            "handoff_margin_max_s": 4,
        },
    }
    config.update(overrides)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def daemon_env(
    root: Path, config: Path, fault: str | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RELAYMD_CONFIG=str(config),
        RELAYMD_STATE_DIR=str(root / "state"),
        RELAYMD_DATA_DIR=str(root / "data"),
        PYTHONPATH=str(REPO),
        **(extra or {}),
    )
    env.pop("RELAYMD_TEST_FAULT", None)
    if fault:
        env["RELAYMD_TEST_FAULT"] = fault
    return env


def start_daemon(
    root: Path, config: Path, fault: str | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    code = (
        "from relaymd.config import load_config\n"
        "from relaymd.daemon import run_daemon_blocking\n"
        "run_daemon_blocking(load_config())\n"
    )
    log = open(root / "daemon.log", "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=daemon_env(root, config, fault, extra_env),
        stdout=log,
        stderr=log,
        cwd=REPO,
        start_new_session=True,
    )


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a daemon that still runs and wait up to 60 s for its clean exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(what: str, check: Callable[[], T | None], timeout: float, root: Path) -> T:
    value = poll_until(check, timeout, every_s=0.3)
    if not value:
        tail = (root / "daemon.log").read_text(errors="replace")[-4000:]
        raise AssertionError(f"timed out waiting for {what}; daemon log tail:\n{tail}")
    return value
