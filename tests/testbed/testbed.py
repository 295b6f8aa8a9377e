"""Describe and locate the two-cluster testbed that tests/testbed/up.sh brings up.

up.sh writes /etc/relaymd-testbed/testbed.json as its very last step, so the
file's presence (with ``ready: true``) means every daemon answered at that time.

Usage from a test module or a benchmark (the repository root is on sys.path)::

    from tests.testbed.testbed import require_testbed
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

DEFAULT_TESTBED_FILE = Path("/etc/relaymd-testbed/testbed.json")
TESTBED_FILE_ENV = "RELAYMD_TESTBED_FILE"
REQUIRE_ENV = "RELAYMD_REQUIRE_TESTBED"


class TestbedCluster(BaseModel):
    """One SLURM cluster, reached over SSH as the non-root test user."""

    # Not a test class, despite the name (pytest would otherwise try to collect it).
    __test__ = False
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    ssh_host: str
    ssh_port: int
    username: str
    client_key: Path
    known_hosts: Path
    slurm_conf: Path
    scratch: Path
    partition: str
    node: str
    cpus: int = 8
    # GPUs as SLURM sees them (GRES gpu on fake devices) and the nvidia-smi stand-in that
    # reports them; a testbed from before them has none.
    gpus: int = 0
    gpu_partition: str | None = None  # allocations of `gpus` GPUs
    gpu_name: str | None = None
    gpu_memory_mib: int | None = None
    nvidia_smi_dir: Path | None = None  # put it first on a worker's PATH to see the GPUs


class Testbed(BaseModel):
    """The whole testbed: clusters, the worker interpreter and the S3 endpoint."""

    __test__ = False
    # extra="ignore": up.sh may grow fields before every test knows about them.
    model_config = ConfigDict(frozen=True, extra="ignore")

    ready: bool
    clusters: list[TestbedCluster]
    worker_python: Path
    s3_endpoint_url: str
    s3_region: str = "us-east-1"
    s3_access_key_id: str = "testing"
    s3_secret_access_key: str = "testing"
    slurmdbd_port: int = 6819
    log_dir: Path = Path("/var/log/relaymd-testbed")

    def cluster(self, name: str) -> TestbedCluster:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(f"testbed has no cluster {name!r}")


def resolve_testbed_file() -> Path:
    return Path(os.environ.get(TESTBED_FILE_ENV) or DEFAULT_TESTBED_FILE)


def load_testbed() -> Testbed | None:
    """The testbed description, or None when up.sh has not (fully) run."""
    path = resolve_testbed_file()
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    tb = Testbed.model_validate_json(raw)
    # A file with ready=false means up.sh is mid-way or failed: treat as absent.
    return tb if tb.ready else None


def unreachable_ports(tb: Testbed, timeout_s: float = 2.0) -> list[int]:
    """sshd ports that refuse TCP connections.

    testbed.json lives under /etc and survives a reboot that kills the daemons;
    a quick connect tells "stale description" apart from "testbed up".
    """
    dead: list[int] = []
    for c in tb.clusters:
        try:
            with socket.create_connection((c.ssh_host, c.ssh_port), timeout=timeout_s):
                pass
        except OSError:
            dead.append(c.ssh_port)
    return dead


def require_testbed() -> Testbed:
    """Return the testbed; skip the test when absent, fail when CI demands it."""
    tb = load_testbed()
    if tb is None:
        msg = f"{resolve_testbed_file()} missing or not ready"
    else:
        dead = unreachable_ports(tb)
        if not dead:
            return tb
        msg = f"{resolve_testbed_file()} present but sshd ports {dead} refuse connections"
    msg = f"testbed not available ({msg}; run tests/testbed/up.sh)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {msg}", pytrace=False)
    pytest.skip(msg)


REPO = Path(__file__).resolve().parents[2]
SHARED = Path("/srv/relaymd-testbed")  # readable by the cluster user
RUN_DIR = Path("/run/relaymd-testbed")  # pid files written by up.sh


def slurm(tb: Testbed, cluster: str, *args: str) -> str:
    """Run a SLURM client command (squeue, sacct, scancel, scontrol) against `cluster`."""
    env = dict(os.environ, SLURM_CONF=str(tb.cluster(cluster).slurm_conf))
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout


def storage_env(tb: Testbed) -> dict[str, str]:
    """The environment a daemon or CLI needs to reach the testbed's moto bucket."""
    return {
        "RELAYMD_S3_ACCESS_KEY_ID": tb.s3_access_key_id,
        "RELAYMD_S3_SECRET_ACCESS_KEY": tb.s3_secret_access_key,
    }


def sshd_listener(name: str) -> tuple[int, list[str]]:
    """The listener's pid (from its pid file) and the command line that started it.

    sshd rewrites its argv into a title (`sshd: /usr/sbin/sshd -f ... [listener] ...`), so the
    command line is recovered from that title.
    """
    pid = int((RUN_DIR / f"sshd-{name}.pid").read_text().split()[0])
    words = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    title = " ".join(words)
    if title.startswith("sshd: "):
        title = title[len("sshd: ") :].split(" [listener]", 1)[0]
    return pid, shlex.split(title)


def sshd_sessions(listener: int) -> list[int]:
    """Pids of the sessions (children) of an sshd listener."""
    out = subprocess.run(["pgrep", "-P", str(listener)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def moto_pid() -> int:
    """The moto S3 server's pid, from up.sh's pid file."""
    return int((RUN_DIR / "moto.pid").read_text().split()[0])


def process_stopped(pid: int) -> bool:
    """True when `pid` is stopped by a signal (state T in /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def health_problems(tb: Testbed) -> list[str]:
    """What is wrong with the testbed right now; empty when every part answers.

    Checked: each sshd accepts connections, each node is up (not down/drained) and answers
    sinfo, moto runs (not stopped) and answers HTTP.
    """
    problems = [f"sshd on port {port} refuses connections" for port in unreachable_ports(tb)]
    for c in tb.clusters:
        try:
            states = slurm(tb, c.name, "sinfo", "-h", "-N", "-n", c.node, "-o", "%T").split()
        except subprocess.CalledProcessError as exc:
            problems.append(f"{c.name}: sinfo failed: {exc.stderr.strip()}")
            continue
        bad = [s for s in states if s.rstrip("*~#$@").lower() not in ("idle", "mixed", "allocated")]
        if not states or bad:
            problems.append(f"{c.name}: node {c.node} is {states or 'unknown'}")
    try:
        pid = moto_pid()
    except (OSError, ValueError):
        problems.append(f"moto: no pid file in {RUN_DIR}")
    else:
        if process_stopped(pid):
            problems.append(f"moto (pid {pid}) is stopped (SIGSTOP); kill -CONT {pid}")
    try:
        with urllib.request.urlopen(tb.s3_endpoint_url + "/", timeout=5):
            pass
    except OSError as exc:
        problems.append(f"moto at {tb.s3_endpoint_url} does not answer: {exc}")
    return problems


def worker_code_copy() -> Path:
    """relaymd/ and worker_entry/ copied where the cluster user can import them."""
    target = SHARED / f"code-{secrets.token_hex(4)}"
    for package in ("relaymd", "worker_entry"):
        shutil.copytree(
            REPO / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(["chmod", "-R", "a+rX", str(target)], check=True)
    return target


def s3_client(tb: Testbed, **options: Any) -> Any:
    """A boto3 S3 client of the testbed's moto, with the testbed's credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=tb.s3_endpoint_url,
        region_name=tb.s3_region,
        aws_access_key_id=tb.s3_access_key_id,
        aws_secret_access_key=tb.s3_secret_access_key,
        **options,
    )


def create_bucket(tb: Testbed, bucket: str) -> None:
    s3_client(tb).create_bucket(Bucket=bucket)


def relay_config(root: Path, tb: Testbed, run: str, code: Path) -> dict[str, Any]:
    """A RelayMD config (as YAML data) for both testbed clusters: SSH with strict host keys,
    1-minute SLURM allocations, native workers running `code` (see worker_code_copy), a new
    moto bucket. Storage credentials come from RELAYMD_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY."""
    bucket = f"relaymd-{run}"
    create_bucket(tb, bucket)
    clusters = []
    for c in tb.clusters:
        clusters.append(
            {
                "name": c.name,
                "transport": "ssh",
                "ssh": {
                    "host": c.ssh_host,
                    "port": c.ssh_port,
                    "username": c.username,
                    "identity_file": str(c.client_key),
                    "known_hosts": str(c.known_hosts),
                    "connect_timeout_s": 5,
                    "keepalive_s": 5,
                },
                "scheduler": "slurm",
                "scratch": f"{c.scratch}/{run}",
                "partitions": [
                    {
                        "name": c.partition,
                        "walltime_minutes": 1,
                        "gpus_per_allocation": 0,
                        "max_pending": 2,
                        "max_running": 3,
                    }
                ],
                "native_worker": [
                    "env",
                    f"PYTHONPATH={code}",
                    str(tb.worker_python),
                    "-m",
                    "worker_entry",
                ],
                "command_timeout_s": 15,
                "poll": {"min_interval_s": 2, "max_interval_s": 4},
            }
        )
    return {
        "storage": {
            "url": f"s3://{bucket}/relay",
            "endpoint_url": tb.s3_endpoint_url,
            "region": tb.s3_region,
            "max_attempts": 3,
        },
        "state_path": str(root / "state" / "state.sqlite"),
        "clusters": clusters,
        "daemon": {"stale_after_s": 20, "stop_grace_s": 15, "min_segment_s": 15},
        "worker": {
            "heartbeat_interval_s": 3,
            "idle_timeout_s": 15,
            "handoff_margin_min_s": 5,
            "handoff_margin_max_s": 12,
        },
    }
