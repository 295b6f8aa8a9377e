"""LocalTransport: a real `bash -s`, its exit status, streams, timeout and round-trip count."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relaymd.models import ClusterProfile
from relaymd.transport import LocalTransport, RemoteTimeout, make_transport


def profile(tmp_path: Path) -> ClusterProfile:
    return ClusterProfile.model_validate(
        {
            "name": "local",
            "transport": "local",
            "scheduler": "direct",
            "scratch": str(tmp_path),
            "partitions": [{"name": "local", "walltime_minutes": 1, "gpus_per_allocation": 0}],
            "native_worker": ["true"],
            "command_timeout_s": 10,
        }
    )


async def test_runs_script_on_stdin(tmp_path: Path) -> None:
    transport = make_transport(profile(tmp_path))
    assert isinstance(transport, LocalTransport)
    big = "y" * 500_000  # no argv limit: the script is fed on stdin
    result = await transport.run(f"v='{big}'\necho ${{#v}}\necho oops >&2\nexit 4\n")
    assert (result.exit_status, result.stdout, result.stderr) == (4, "500000\n", "oops\n")
    await transport.run("true")
    assert transport.round_trips == 2


async def test_timeout_kills_the_whole_script(tmp_path: Path) -> None:
    transport = LocalTransport(profile(tmp_path))
    marker = tmp_path / "still-running"
    with pytest.raises(RemoteTimeout) as caught:
        await transport.run(f"sleep 0.5 && touch {marker} & sleep 30\n", timeout=0.2)
    assert "local" in str(caught.value) and "command_timeout_s" in str(caught.value)
    # The child of the killed script died with it (same process group).
    await asyncio.sleep(0.8)
    assert not marker.exists()


async def test_signal_death_reads_like_a_shell(tmp_path: Path) -> None:
    result = await LocalTransport(profile(tmp_path)).run("kill -KILL $$\n")
    assert result.exit_status == 137


async def test_scripts_and_their_children_never_see_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "RELAYMD_S3_SECRET_ACCESS_KEY": "s3-secret-value",
        "RELAYMD_S3_ACCESS_KEY_ID": "s3-key-id-value",
        "INFISICAL_CLIENT_SECRET": "infisical-value",
        "INFISICAL_CLIENT_ID": "infisical-id-value",
        "GITHUB_TOKEN": "token-value",
        "AWS_SESSION_TOKEN": "aws-value",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RELAYMD_ENV", "development")
    transport = make_transport(profile(tmp_path))
    # A background child, as the direct scheduler starts workers: its environment too.
    result = await transport.run(
        f"env > {tmp_path}/env.txt; (env > {tmp_path}/child.txt) &\nwait\n"
    )
    assert result.exit_status == 0
    for dump in ("env.txt", "child.txt"):
        text = (tmp_path / dump).read_text()
        assert "PATH=" in text and "RELAYMD_ENV=development" in text
        for name, value in secrets.items():
            assert name not in text and value not in text


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95, -1])
def test_a_truncated_script_runs_nothing(tmp_path: Path, cut: float) -> None:
    """What a connection lost mid-transfer leaves bash -s with: no line of it may run."""
    import subprocess

    from relaymd.transport.base import whole_or_nothing

    script = "".join(f"echo {i} >> {tmp_path}/ran\n" for i in range(20))
    wrapped = whole_or_nothing(script)
    fed = wrapped[: int(len(wrapped) * cut)] if cut > 0 else wrapped[: -len("__relaymd_script\n")]
    subprocess.run(["bash", "-s"], input=fed, text=True, capture_output=True, check=False)
    assert not (tmp_path / "ran").exists()
    subprocess.run(["bash", "-s"], input=wrapped, text=True, check=True)
    assert (tmp_path / "ran").read_text().split() == [str(i) for i in range(20)]
