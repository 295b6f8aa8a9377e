"""Describe and locate the two-cluster testbed that tests/testbed/up.sh brings up.

up.sh writes /etc/relaymd-testbed/testbed.json as its very last step, so the
file's presence (with ``ready: true``) means every daemon answered at that time.

Usage from a test module (tests/ has no packages, so put this dir on sys.path)::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
    from testbed import require_testbed
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

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
