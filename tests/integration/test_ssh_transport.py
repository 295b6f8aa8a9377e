"""SSHTransport against the testbed's real sshd (tests/testbed/up.sh): reuse, errors, reconnect."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from relaymd.models import ClusterProfile
from relaymd.transport import HostKeyRejected, HostUnreachable, RemoteTimeout
from relaymd.transport.ssh import SSHTransport
from tests.testbed.testbed import TestbedCluster, require_testbed

pytestmark = [pytest.mark.testbed]


@pytest.fixture
def cluster() -> TestbedCluster:
    return require_testbed().cluster("clustera")


def profile_for(cluster: TestbedCluster, **ssh: object) -> ClusterProfile:
    settings: dict[str, object] = {
        "host": cluster.ssh_host,
        "port": cluster.ssh_port,
        "username": cluster.username,
        "identity_file": str(cluster.client_key),
        "known_hosts": str(cluster.known_hosts),
        "connect_timeout_s": 10,
    }
    settings.update(ssh)
    return ClusterProfile.model_validate(
        {
            "name": cluster.name,
            "ssh": settings,
            "scratch": str(cluster.scratch),
            "partitions": [{"name": cluster.partition, "walltime_minutes": 5}],
            "native_worker": ["true"],
            "command_timeout_s": 20,
        }
    )


async def test_one_connection_serves_many_commands(cluster: TestbedCluster) -> None:
    transport = SSHTransport(profile_for(cluster), ssh_config=None)
    try:
        results = [await transport.run(f"echo run-{i}; echo $SLURM_CONF >&2") for i in range(5)]
        # Concurrent callers share the same connection too (one channel each).
        results += await asyncio.gather(*(transport.run("id -un") for _ in range(6)))
    finally:
        await transport.close()
    assert [r.stdout for r in results[:5]] == [f"run-{i}\n" for i in range(5)]
    assert all(r.stdout == f"{cluster.username}\n" for r in results[5:])
    assert results[0].stderr.strip() == str(cluster.slurm_conf)
    assert transport.connects == 1
    assert transport.round_trips == 11


async def test_script_on_stdin_keeps_exit_status_and_needs_no_quoting(
    cluster: TestbedCluster,
) -> None:
    transport = SSHTransport(profile_for(cluster), ssh_config=None)
    big = "x" * 300_000  # beyond any argv limit: the script travels on stdin
    script = f'v=\'{big}\'\nprintf \'%s\' "${{#v}}"\necho " it\'s \\"quoted\\"" >&2\nexit 7\n'
    try:
        result = await transport.run(script)
    finally:
        await transport.close()
    assert result.exit_status == 7
    assert result.stdout == "300000"
    assert result.stderr == ' it\'s "quoted"\n'


async def test_unknown_host_key_is_rejected_with_the_fix(
    cluster: TestbedCluster, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    # Another host's key only: this host is unknown.
    known.write_text(
        "\n".join(
            line
            for line in cluster.known_hosts.read_text().splitlines()
            if not line.startswith(f"[{cluster.ssh_host}]:{cluster.ssh_port} ")
        )
        + "\n"
    )
    transport = SSHTransport(profile_for(cluster, known_hosts=str(known)), ssh_config=None)
    with pytest.raises(HostKeyRejected) as caught:
        await transport.run("true")
    message = str(caught.value)
    assert f"ssh-keyscan -p {cluster.ssh_port} {cluster.ssh_host} >> {known}" in message
    assert "fingerprint" in message and cluster.name in message
    assert transport.connects == 0


def _changed_host_key(cluster: TestbedCluster, tmp_path: Path) -> Path:
    """A known_hosts file recording clusterb's key under `cluster`'s address: as if
    `cluster`'s key had changed."""
    other = require_testbed().cluster("clusterb")
    theirs = next(
        line
        for line in other.known_hosts.read_text().splitlines()
        if line.startswith(f"[{other.ssh_host}]:{other.ssh_port} ")
    )
    known = tmp_path / "known_hosts"
    known.write_text(f"[{cluster.ssh_host}]:{cluster.ssh_port} {theirs.split(' ', 1)[1]}\n")
    return known


async def test_changed_host_key_warns_of_mitm(cluster: TestbedCluster, tmp_path: Path) -> None:
    known = _changed_host_key(cluster, tmp_path)
    transport = SSHTransport(profile_for(cluster, known_hosts=str(known)), ssh_config=None)
    with pytest.raises(HostKeyRejected) as caught:
        await transport.check()
    message = str(caught.value)
    assert "man-in-the-middle" in message
    assert f"ssh-keygen -f {known} -R '[{cluster.ssh_host}]:{cluster.ssh_port}'" in message


async def test_wrong_port_is_unreachable(cluster: TestbedCluster) -> None:
    transport = SSHTransport(profile_for(cluster, port=1), ssh_config=None, connect_attempts=2)
    with pytest.raises(HostUnreachable) as caught:
        await transport.run("true")
    assert f"{cluster.ssh_host}:1" in str(caught.value)
    assert transport.connects == 0


async def test_command_past_its_timeout_raises_and_connection_survives(
    cluster: TestbedCluster,
) -> None:
    transport = SSHTransport(profile_for(cluster), ssh_config=None)
    try:
        with pytest.raises(RemoteTimeout) as caught:
            await transport.run("sleep 30", timeout=1)
        assert "timeout" in str(caught.value)
        after = await transport.run("echo still-here")
    finally:
        await transport.close()
    assert after.stdout == "still-here\n"
    assert transport.connects == 1


async def test_ssh_config_alias_is_honoured(cluster: TestbedCluster, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host relaymd-test-alias\n"
        f"  HostName {cluster.ssh_host}\n"
        f"  Port {cluster.ssh_port}\n"
        f"  User {cluster.username}\n"
        f"  IdentityFile {cluster.client_key}\n"
    )
    profile = ClusterProfile.model_validate(
        {
            "name": cluster.name,
            "ssh": {"host": "relaymd-test-alias", "known_hosts": str(cluster.known_hosts)},
            "scratch": str(cluster.scratch),
            "partitions": [{"name": cluster.partition, "walltime_minutes": 5}],
            "native_worker": ["true"],
        }
    )
    transport = SSHTransport(profile, ssh_config=config)
    try:
        result = await transport.run("id -un")
    finally:
        await transport.close()
    assert result.stdout == f"{cluster.username}\n"
    assert transport.target() == (cluster.ssh_host, cluster.ssh_port)


async def test_reconnects_after_the_connection_is_dropped(cluster: TestbedCluster) -> None:
    transport = SSHTransport(profile_for(cluster), ssh_config=None)
    try:
        # bash's parent is the remote `timeout`, whose parent is this connection's sshd.
        found = await transport.run("ps -o ppid= -p $PPID; ps -o comm= -p $(ps -o ppid= -p $PPID)")
        session_pid = int(found.stdout.split()[0])
        assert "sshd" in found.stdout
        os.kill(session_pid, signal.SIGKILL)
        for _ in range(50):  # until asyncssh notices the dead connection
            if not transport.connection.is_open:
                break
            await asyncio.sleep(0.1)
        result = await transport.run("echo back")
    finally:
        await transport.close()
    assert result.stdout == "back\n"
    assert transport.connects == 2


def _my_connections_to(port: int) -> int:
    """Established TCP connections from this process to 127.0.0.1:<port> (other processes'
    sessions to the same sshd, e.g. a previous test's daemon winding down, do not count)."""
    import subprocess

    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(f"pid={os.getpid()}," in line for line in out.splitlines())


def _known_hosts_without(known_hosts: Path, port: int, folder: Path) -> Path:
    lines = known_hosts.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(f"[127.0.0.1]:{port} ")]
    assert len(kept) == len(lines) - 1
    path = folder / "known_hosts"
    path.write_text("".join(kept))
    return path


async def test_proxy_jump_through_an_ssh_config_alias(tmp_path: Path) -> None:
    tb = require_testbed()
    bastion, target = tb.cluster("clustera"), tb.cluster("clusterb")
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host relaymd-bastion\n"
        f"  HostName {bastion.ssh_host}\n"
        f"  Port {bastion.ssh_port}\n"
        f"  User {bastion.username}\n"
        f"  IdentityFile {bastion.client_key}\n"
        "Host relaymd-nowhere\n"
        f"  HostName {bastion.ssh_host}\n"
        "  Port 1\n"
    )
    assert _my_connections_to(bastion.ssh_port) == 0
    transport = SSHTransport(profile_for(target, proxy_jump="relaymd-bastion"), ssh_config=config)
    try:
        result = await transport.run("echo $SLURM_CONF")
        # The login node answered, and the bastion carries the connection while it lasts.
        assert result.stdout.strip().endswith("clusterb/slurm.conf")
        assert _my_connections_to(bastion.ssh_port) == 1
    finally:
        await transport.close()

    # A dead bastion is "unreachable", not a hang or a traceback.
    dead = SSHTransport(
        profile_for(target, proxy_jump="relaymd-nowhere", connect_timeout_s=3),
        ssh_config=config,
        connect_attempts=1,
    )
    with pytest.raises(HostUnreachable):
        await dead.run("true")
    await dead.close()

    # The bastion's host key is checked like the login node's: absent from known_hosts -> refused.
    only_target = _known_hosts_without(target.known_hosts, bastion.ssh_port, tmp_path)
    strict = SSHTransport(
        profile_for(target, proxy_jump="relaymd-bastion", known_hosts=str(only_target)),
        ssh_config=config,
        connect_attempts=1,
    )
    with pytest.raises(HostKeyRejected):
        await strict.run("true")
    await strict.close()


async def test_changed_host_key_is_its_own_cluster_state_and_warned_once(
    cluster: TestbedCluster, tmp_path: Path
) -> None:
    """The daemon's cycle against the real sshd with a wrong known_hosts entry."""
    from structlog.testing import capture_logs

    from relaymd.daemon.runner import ClusterRunner
    from relaymd.models.state import ClusterReachability
    from relaymd.transport import HostKeyChanged
    from tests.support.fake_cluster import open_daemon_context

    known = _changed_host_key(cluster, tmp_path)
    profile = profile_for(cluster, known_hosts=str(known))
    with pytest.raises(HostKeyChanged):
        await SSHTransport(profile, ssh_config=None).check()

    ctx = await open_daemon_context(tmp_path, {profile.name: profile})
    store = ctx.store
    runner = ClusterRunner(
        ctx, profile, transport_factory=lambda p, **_: SSHTransport(p, ssh_config=None)
    )
    try:
        with capture_logs() as logs:
            for _ in range(3):
                report = await runner.cycle()
                assert not report.ok
        status = await store.get_cluster_status(profile.name)
        assert status is not None
        assert status.reachability is ClusterReachability.HOST_KEY_CHANGED
        assert f"ssh-keygen -f {known} -R" in (status.last_error or "")
        warnings = [e for e in logs if e["event"] == "cluster_poll_failed"]
        assert len(warnings) == 1, warnings
        assert warnings[0]["reachability"] == "host-key-changed"
    finally:
        await runner.close()
        await store.close()


def _alias_profile(cluster: TestbedCluster, **ssh: object) -> ClusterProfile:
    return ClusterProfile.model_validate(
        {
            "name": cluster.name,
            "ssh": {"host": "relaymd-test-alias", **ssh},
            "scratch": str(cluster.scratch),
            "partitions": [{"name": cluster.partition, "walltime_minutes": 5}],
            "native_worker": ["true"],
        }
    )


async def test_known_hosts_files_of_the_ssh_config_are_honoured(
    cluster: TestbedCluster, tmp_path: Path
) -> None:
    """UserKnownHostsFile/GlobalKnownHostsFile from ~/.ssh/config decide, unless the profile
    names its own known_hosts."""
    site = tmp_path / "site_known_hosts"
    site.write_text(cluster.known_hosts.read_text())
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host relaymd-test-alias\n"
        f"  HostName {cluster.ssh_host}\n"
        f"  Port {cluster.ssh_port}\n"
        f"  User {cluster.username}\n"
        f"  IdentityFile {cluster.client_key}\n"
        f"  UserKnownHostsFile {tmp_path / 'absent_known_hosts'} {site}\n"
    )
    transport = SSHTransport(_alias_profile(cluster), ssh_config=config)
    try:
        result = await transport.run("id -un")
    finally:
        await transport.close()
    assert result.stdout == f"{cluster.username}\n"

    # An empty file named by the profile wins over the ssh config: the key is unknown.
    own = tmp_path / "own_known_hosts"
    own.write_text("")
    refused = SSHTransport(_alias_profile(cluster, known_hosts=str(own)), ssh_config=config)
    try:
        with pytest.raises(HostKeyRejected, match="own_known_hosts"):
            await refused.run("true")
    finally:
        await refused.close()

    # The ssh config's file, emptied, is what a connection is checked against (and named).
    site.write_text("")
    rejected = SSHTransport(_alias_profile(cluster), ssh_config=config)
    try:
        with pytest.raises(HostKeyRejected, match="site_known_hosts"):
            await rejected.run("true")
    finally:
        await rejected.close()
