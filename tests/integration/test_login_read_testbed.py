"""On the testbed's shared scratch, over real SSH: a heartbeat rewritten between two polls is
what the next poll returns, even when the rewrite keeps the file's size and mtime (what a
client with a cached attribute would see), and an untouched one comes back as unchanged."""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator

import pytest
from test_slurm_scheduler import profile_for

from relaymd.ids import new_allocation_id
from relaymd.mailbox.carrier import ReadRequest
from relaymd.mailbox.layout import alloc_dir
from relaymd.mailbox.models import Heartbeat, WorkerState
from relaymd.mailbox.reading import HeartbeatMemo
from relaymd.mailbox.scratch_read import (
    build_read_script,
    parse_login_records,
    parse_read_output,
)
from relaymd.transport.ssh import SSHTransport
from tests.testbed.testbed import require_testbed

pytestmark = [pytest.mark.testbed]


@pytest.fixture
async def transports() -> AsyncIterator[tuple[SSHTransport, SSHTransport, str]]:
    """A 'worker' connection that writes and a 'daemon' connection that polls."""
    cluster = require_testbed().cluster("clustera")
    profile = profile_for(cluster, ["true"])
    worker, daemon = SSHTransport(profile, ssh_config=None), SSHTransport(profile, ssh_config=None)
    yield worker, daemon, profile.scratch
    await worker.close()
    await daemon.close()


async def rewrite(worker: SSHTransport, folder: str, beat: Heartbeat, mtime: str) -> None:
    """The worker's atomic rewrite (temp file + rename), then the old mtime put back."""
    data = shlex.quote(beat.model_dump_json())
    path = shlex.quote(f"{folder}/heartbeat.json")
    result = await worker.run(
        f"mkdir -p {shlex.quote(folder)} && printf '%s' {data} > {path}.tmp"
        f" && mv {path}.tmp {path} && touch -d {shlex.quote(mtime)} {path}"
    )
    assert result.exit_status == 0, result.stderr


async def test_a_rewritten_heartbeat_is_visible_to_the_next_poll(
    transports: tuple[SSHTransport, SSHTransport, str],
) -> None:
    worker, daemon, scratch = transports
    alloc_id = new_allocation_id()
    folder = alloc_dir(scratch, alloc_id)
    memo = HeartbeatMemo()
    requests = [ReadRequest(allocation_id=alloc_id)]
    try:
        for seq in range(1, 6):  # 1-digit seqs: every rewrite has the same size and mtime
            beat = Heartbeat(allocation_id=alloc_id, seq=seq, state=WorkerState.IDLE)
            beat = beat.model_copy(update={"written_at": beat.written_at.replace(microsecond=0)})
            await rewrite(worker, folder, beat, "2026-01-01 00:00:00")
            for poll in range(2):  # the rewrite, then the same file again
                script, token = build_read_script(scratch, "true", requests, memo=memo)
                result = await daemon.run(script)
                assert f"@@{token} PY" in result.stdout  # the python3 reader answered
                blob = result.stdout.split(f"@@{token} PY\n", 1)[1].split("\n", 1)[0]
                records = parse_login_records(blob, requests)
                assert records is not None
                assert (alloc_id in records.heartbeats) is (poll == 0)  # then: unchanged
                snap = parse_read_output(
                    result.stdout, token, "clustera", requests, lambda _t: [], memo
                )
                seen = snap.files[alloc_id].heartbeat
                assert seen is not None and seen.seq == seq, (seq, poll)
    finally:
        await worker.run(f"rm -rf {shlex.quote(folder)}")
