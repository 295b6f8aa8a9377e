"""A relay's outputs, assembled, are the uninterrupted run's: real OpenMM (Reference platform)
in real worker processes; the verdict comes from mdtraj and MDAnalysis reading the files."""

from __future__ import annotations

import shutil
from pathlib import Path

import MDAnalysis
import mdtraj
import numpy as np
import pytest

from relaymd.assemble import assemble_outputs
from relaymd.mailbox.models import EventKind
from relaymd.models import StorageAccess
from tests.worker.worker_harness import Relay

TOTAL = 240
EVERY = 20  # one chunk per checkpoint interval
EPOCH_SHIFT = 7  # renumber epochs 1, 2, 3.. as 8, 9, 10..: string order would put 10 before 8


def _engine() -> dict[str, object]:
    return {
        "kind": "openmm",
        "total_steps": TOTAL,
        "checkpoint_every_steps": EVERY,
        "report_every_steps": 10,
        "dcd_every_steps": 10,
        "topology": "topology.pdb",
        "platform": "Reference",
    }


def _copy_outputs(access: StorageAccess, job_id: str, dest: Path) -> Path:
    """The file:// store holds the storage layout as plain files: copy outputs/<epoch>/."""
    root = Path(access.url.removeprefix("file://")) / "jobs" / job_id / "outputs"
    shutil.copytree(root, dest / "outputs")
    return dest


def _rows(csv: Path) -> list[list[str]]:
    return [line.split(",") for line in csv.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_assembled_relay_equals_the_uninterrupted_run(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    single = Relay(tmp_path / "single", file_access, "job-single")
    single.upload_bundle(bundle_dir)
    _, end = single.run_segment(_engine(), None)
    assert end.kind is EventKind.COMPLETED and end.step == TOTAL

    relay = Relay(tmp_path / "relay", file_access, "job-relay")
    relay.upload_bundle(bundle_dir)
    for _ in range(TOTAL // EVERY + 2):
        _, end = relay.run_segment(_engine(), stop_after_checkpoints=1)
        if end.kind is EventKind.COMPLETED:
            break
        assert end.kind is EventKind.STOPPED, end
    assert end.kind is EventKind.COMPLETED
    assert relay.epoch >= 3

    single_dir = _copy_outputs(file_access, "job-single", tmp_path / "dl-single")
    relay_dir = _copy_outputs(file_access, "job-relay", tmp_path / "dl-relay")
    outputs = relay_dir / "outputs"
    for epoch in range(relay.epoch, 0, -1):
        (outputs / str(epoch)).rename(outputs / str(epoch + EPOCH_SHIFT))
    assert sorted(p.name for p in outputs.iterdir())[0] == str(1 + EPOCH_SHIFT + 2)  # "10"
    # A killed segment's last chunk whose checkpoint never reached storage: same start step as
    # its successor's chunk, different frames; the later epoch must win.
    stale_epoch = 2 + EPOCH_SHIFT  # "9", before "10" numerically, after it as a string
    successor_chunk = sorted((outputs / str(stale_epoch + 1)).glob("trajectory.*.dcd"))[0]
    stale = outputs / str(stale_epoch) / successor_chunk.name
    data = bytearray(successor_chunk.read_bytes())
    data[-100:-4] = bytes(96)  # zero part of the last frame's coordinates
    stale.write_bytes(bytes(data))

    topology = str(bundle_dir / "topology.pdb")
    reference = assemble_outputs(single_dir)
    assembled = assemble_outputs(relay_dir, xtc=True, topology=Path(topology))
    assert stale in assembled.chunks_dropped
    assert assembled.first_step == 0 and assembled.last_step == TOTAL
    assert assembled.frames == TOTAL // 10

    expected = mdtraj.load(reference.trajectory, top=topology)
    got = mdtraj.load(assembled.trajectory, top=topology)
    assert got.n_frames == TOTAL // 10
    assert np.array_equal(got.xyz, expected.xyz)
    assert np.array_equal(got.unitcell_lengths, expected.unitcell_lengths)
    # ... and what the uninterrupted run wrote is a plain mdtraj load of its own chunks.
    chunks = sorted((single_dir / "outputs" / "1").glob("trajectory.*.dcd"))
    assert np.array_equal(mdtraj.load([str(c) for c in chunks], top=topology).xyz, expected.xyz)

    universe = MDAnalysis.Universe(topology, str(assembled.trajectory))
    assert len(universe.trajectory) == TOTAL // 10
    for frame, ts in enumerate(universe.trajectory):
        # MDAnalysis works in Angstrom, mdtraj in nm.
        assert np.allclose(ts.positions, got.xyz[frame] * 10, atol=1e-4)

    assert assembled.xtc is not None
    xtc = mdtraj.load(assembled.xtc, top=topology)
    assert xtc.n_frames == TOTAL // 10
    assert np.allclose(xtc.xyz, expected.xyz, atol=2e-3)  # XTC keeps 3 decimals (nm)

    # One header, rows in step order, time running on as step x 0.002 ps.
    assert assembled.state_data is not None and reference.state_data is not None
    rows = _rows(assembled.state_data)
    assert rows[0][0].startswith("#") and not any(r[0].startswith("#") for r in rows[1:])
    steps = [int(r[0]) for r in rows[1:]]
    assert steps == list(range(10, TOTAL + 1, 10))
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([s * 0.002 for s in steps])
    # Same energies and temperatures as the uninterrupted run (the speed column differs).
    expected_rows = _rows(reference.state_data)
    assert [r[:4] for r in rows[1:]] == [r[:4] for r in expected_rows[1:]]
