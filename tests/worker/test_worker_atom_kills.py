"""Hard kills at many points of an AToM-like segment: every sample exactly once, in order.

The stand-in (examples/atom-like/fake_atom.py) behaves like AToM-OpenMM 8.5 where it hurts a
relay: sample files opened for append and never cut back on restart, a checkpoint round
guarded by `ckpt_is_valid`, replica bookkeeping (RECycle, REMDSteps) in each checkpoint XML.
It pauses at a named point (FAKE_ATOM_PAUSE) and says so by writing its pid to a file; the
test then kills the worker and/or the engine there with SIGKILL. No sleeps decide anything.

The verdict comes from storage: the sample files the final segment uploaded equal an
uninterrupted run's byte for byte, and every stored checkpoint's sample files hold exactly the
lines its replica XMLs own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from relaymd.mailbox.models import EventKind
from relaymd.models import StorageAccess
from relaymd.storage.checkpoints import download_checkpoint, list_checkpoints
from relaymd.storage.keys import checkpoint_prefix, outputs_prefix
from tests.worker.atom_like import (
    PRNT_FREQUENCY,
    REPLICAS,
    assert_exactly_once,
    engine,
    reference_run,
    write_bundle,
)
from tests.worker.worker_harness import Allocation, Relay, wait_for

MAX_SAMPLES = 8
ENGINE = engine(MAX_SAMPLES)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[bytes]]:
    return reference_run(tmp_path_factory.mktemp("reference") / "run", MAX_SAMPLES)


def _live_dir(alloc: Allocation, relay: Relay) -> Path:
    return alloc.work_dir / f"{relay.job_id}-{relay.epoch}" / "work"


def _round_uploaded(alloc: Allocation, relay: Relay, scratch: Path) -> bool:
    """The newest checkpoint in storage is the engine's current (paused) round."""
    ckpts = [e for e in alloc.events() if e.kind is EventKind.CHECKPOINT]
    if not ckpts or ckpts[-1].checkpoint is None:
        return False
    dest = scratch / f"probe-{ckpts[-1].checkpoint.seq}"
    shutil.rmtree(dest, ignore_errors=True)
    download_checkpoint(relay.store, ckpts[-1].checkpoint, dest)
    live = _live_dir(alloc, relay)
    return all(
        (dest / f"r{k}/fake_ckpt.xml").read_bytes() == (live / f"r{k}/fake_ckpt.xml").read_bytes()
        for k in range(REPLICAS)
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _md_steps(xml: Path) -> int:
    params = ET.parse(xml).getroot().find("Parameters")
    assert params is not None
    return round(float(params.attrib["REMDSteps"]))


CASES = [
    # (pause point, what to wait for before the kill, who is killed)
    pytest.param("line:2", None, "worker+engine", id="md-before-any-round"),
    pytest.param("line_after_round:1", "uploaded", "worker+engine", id="md-after-upload"),
    pytest.param("line_after_round:1", "uploaded", "worker", id="md-after-upload-worker-only"),
    pytest.param("line_after_round:2", "uploaded", "engine", id="md-after-upload-engine-only"),
    pytest.param("round_start:2", None, "worker+engine", id="sentinel-deleted"),
    pytest.param("round_mid:2", None, "worker+engine", id="mid-round"),
    pytest.param("round_end:1", None, "worker+engine", id="round-just-ended"),
    pytest.param("round_end:2", "uploaded", "worker+engine", id="round-uploaded"),
    pytest.param("round_end:1", "upload_failing", "worker+engine", id="during-upload"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("pause", "wait", "victim"), CASES)
def test_hard_kill_keeps_every_sample_exactly_once(
    tmp_path: Path,
    file_access: StorageAccess,
    reference: dict[int, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    pause: str,
    wait: str | None,
    victim: str,
) -> None:
    _kill_then_relay(tmp_path, file_access, reference, monkeypatch, ENGINE, pause, wait, victim)


# The same program as a generic `command` job: it declares, in every checkpoint round, how
# many lines of each output file belong to the round (engine.output_line_counts).
GENERIC: dict[str, object] = {
    **{k: v for k, v in ENGINE.items() if k != "preset"},
    "checkpoint_globs": ["r*/*_ckpt.xml", "line_counts.json"],
    "ready_marker": "ckpt_is_valid",
    "progress_globs": ["r*/*.out"],
    "output_globs": ["r*/*.out"],
    "output_line_counts": "line_counts.json",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pause", "wait", "victim"),
    [
        pytest.param("line_after_round:1", "uploaded", "worker+engine", id="md-after-upload"),
        pytest.param("round_mid:2", None, "worker+engine", id="mid-round"),
        pytest.param("round_end:1", "upload_failing", "worker+engine", id="during-upload"),
    ],
)
def test_generic_command_with_line_counts_keeps_every_sample_exactly_once(
    tmp_path: Path,
    file_access: StorageAccess,
    reference: dict[int, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    pause: str,
    wait: str | None,
    victim: str,
) -> None:
    monkeypatch.setenv("FAKE_ATOM_LINE_COUNTS", "line_counts.json")
    _kill_then_relay(tmp_path, file_access, reference, monkeypatch, GENERIC, pause, wait, victim)


def _kill_then_relay(
    tmp_path: Path,
    file_access: StorageAccess,
    reference: dict[int, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    engine_spec: dict[str, object],
    pause: str,
    wait: str | None,
    victim: str,
) -> None:
    """Segment 1 pauses at `pause` and is killed; later segments run to completion."""
    relay = Relay(tmp_path, file_access, "job-kill")
    relay.upload_bundle(write_bundle(tmp_path / "bundle", MAX_SAMPLES))
    monkeypatch.setenv("FAKE_ATOM_EXIT_SLEEP_S", "0.1")
    pause_file = tmp_path / "paused"
    monkeypatch.setenv("FAKE_ATOM_PAUSE", pause)
    monkeypatch.setenv("FAKE_ATOM_PAUSE_FILE", str(pause_file))
    assert file_access.url.startswith("file://")
    store_root = Path(file_access.url.removeprefix("file://"))
    blocker = store_root / checkpoint_prefix(relay.job_id, 1, 1) / "manifest.json"
    if wait == "upload_failing":
        # The first checkpoint's files upload, its manifest cannot: the worker is retrying.
        blocker.mkdir(parents=True)

    alloc = relay.assigned(engine_spec)
    alloc.start(idle_timeout=1.0)
    wait_for(lambda: pause_file.is_file() and pause_file.read_text(), 60, f"engine at {pause}")
    engine_pid = int(pause_file.read_text())
    if wait == "uploaded":
        wait_for(lambda: _round_uploaded(alloc, relay, tmp_path), 60, "the round uploaded")
    elif wait == "upload_failing":
        wait_for(lambda: "checkpoint_upload_failed" in alloc.log(), 60, "a failing upload")
    try:
        if victim in ("worker", "worker+engine"):
            alloc.kill(signal.SIGKILL)
            alloc.wait_exit()
        if victim in ("engine", "worker+engine"):
            _kill_group(engine_pid)
        if victim == "engine":
            alloc.wait_event({EventKind.FAILED}, timeout=60, epoch=relay.epoch)
            assert alloc.wait_exit(60) == 0
        relay.advance(alloc.events())
        shutil.rmtree(blocker, ignore_errors=True)
        monkeypatch.delenv("FAKE_ATOM_PAUSE")

        for _ in range(3):
            _, end = relay.run_segment(engine_spec, None)
            if end.kind is EventKind.COMPLETED:
                break
        assert end.kind is EventKind.COMPLETED and end.step == MAX_SAMPLES
    finally:
        _kill_group(engine_pid)  # the orphan of a worker-only kill (SLURM would reap it)

    # Verdict from storage: the final sample files hold the uninterrupted run's samples, each
    # exactly once and in order, and the slowest replica has exactly MAX_SAMPLES.
    prefix = outputs_prefix(relay.job_id, relay.epoch)
    got = {k: relay.store.get_bytes(f"{prefix}r{k}/fake.out") for k in range(REPLICAS)}
    assert_exactly_once(got, reference, MAX_SAMPLES)
    # Every stored checkpoint holds exactly the sample lines its replica XMLs own.
    for ref in list_checkpoints(relay.store, relay.job_id):
        dest = tmp_path / f"check-{ref.epoch}-{ref.seq}"
        manifest = download_checkpoint(relay.store, ref, dest)
        owned = [_md_steps(dest / f"r{k}/fake_ckpt.xml") // PRNT_FREQUENCY for k in range(REPLICAS)]
        assert manifest.step == min(owned)
        for k, lines in enumerate(owned):
            assert (dest / f"r{k}/fake.out").read_bytes() == b"".join(reference[k][:lines])
