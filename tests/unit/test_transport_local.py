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
