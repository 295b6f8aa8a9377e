"""A command job (the AToM-like stand-in) relayed by a real daemon to a completion the daemon
believes only with evidence: its final checkpoint verified and at the target sample count.
Every allocation folder ends without its credentials file."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from relaymd.config import load_config
from relaymd.models import CommandSettings, JobSpec, JobState, Resources
from tests.daemon.daemon_e2e_support import REPO, local_config, start_daemon, stop_daemon, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
SAMPLES = 120
# Two replicas, a sample line every second MD chunk: ~10 s of work, more than one 14 s
# allocation holds once startup and handoff are counted.
ATOM_CONFIG = f"""# AToM-like production run (keys as in AToM-OpenMM's .cntl files)
BASENAME = 'fake'
TEMPERATURES = '300'
LAMBDAS = '0.00, 1.00'
PRODUCTION_STEPS = 100
PRNT_FREQUENCY = 200
MAX_SAMPLES = {SAMPLES}
CYCLE_TIME = 0.02
CHECKPOINT_TIME = 2
WALL_TIME = 240
"""


def test_command_job_completes_on_a_verified_final_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.state import StateStore
    from relaymd.storage import open_store
    from relaymd.storage.checkpoints import verify_claimed_checkpoint
    from relaymd.submission.submit import submit_directory

    root = tmp_path
    monkeypatch.setenv("RELAYMD_STATE_DIR", str(root / "state"))
    monkeypatch.setenv("RELAYMD_DATA_DIR", str(root / "data"))
    config_path = local_config(root, walltime_s=14.0)
    monkeypatch.setenv("RELAYMD_CONFIG", str(config_path))
    loaded = load_config(config_path)
    scratch = Path(loaded.clusters[0].scratch)

    job_dir = root / "job"
    job_dir.mkdir()
    shutil.copy(REPO / "examples" / "atom-like" / "fake_atom.py", job_dir)
    (job_dir / "atom.cntl").write_text(ATOM_CONFIG)
    spec = JobSpec(
        title="atom-like relay",
        engine=CommandSettings(
            command=[sys.executable, "fake_atom.py", "atom.cntl"],
            preset="atom",
            target_samples=SAMPLES,
            settle_s=0.1,
            stop_grace_s=5,
            startup_timeout_s=30,
        ),
        resources=Resources(gpus=0),
        checkpoint_interval_s=2,
        max_retries=1,
    )
    (job_dir / "relaymd.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    store = open_store(storage_access(loaded.config, make_secrets_provider(loaded.config.secrets)))
    state = StateStore.open(Path(loaded.config.state_path))
    job = submit_directory(job_dir, loaded=loaded, store=store, state=state)

    daemon = start_daemon(root, config_path)
    try:
        final = wait_for(
            "completion", lambda: (j := state.get_job(job.id)) and j.state.is_final and j, 200, root
        )
        # The worker of the last allocation exits idle; the daemon sees that allocation end.
        wait_for(
            "every allocation ended",
            lambda: all(a.state == "ended" for a in state.list_allocations()),
            60,
            root,
        )
        wait_for(
            "credentials removed",
            lambda: not list(scratch.glob("alloc/*/credentials")),
            30,
            root,
        )
    finally:
        stop_daemon(daemon)
    assert final.state is JobState.COMPLETED, final.failure_reason
    assert final.checkpoint is not None and final.step == SAMPLES
    manifest = verify_claimed_checkpoint(store, job.id, final.checkpoint)
    assert manifest.step >= SAMPLES and manifest.epoch == final.epoch
    kinds = [e.kind for e in state.list_events(limit=500)]
    assert "completion_rejected" not in kinds and "checkpoint_rejected" not in kinds, kinds
    state.close()
