"""GPU slots end to end on the testbed (ADR 0026), shared by the e2e test and the bench.

Six one-GPU and one two-GPU AToM-like jobs (examples/atom-like/fake_atom.py, preset `atom`)
relay over 4-GPU allocations (`gpu4`, 1-minute walltime) on both clusters, with handoffs; one
slot's worker is killed with SIGKILL mid-segment. What the run leaves behind is read from
outside the daemon: the workers' events in every slot folder, the outputs in the bucket and
sacct. This module runs the scenario and reads those records; the verdicts are the caller's.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from relaymd.ids import group_of
from relaymd.mailbox.files import read_events
from relaymd.mailbox.layout import EVENTS_FILE, HEARTBEAT_FILE
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent
from relaymd.models import CommandSettings, JobSpec, JobState, Resources
from relaymd.storage.base import ObjectStore
from tests.daemon.daemon_e2e_support import REPO, start_daemon, stop_daemon, wait_for
from tests.testbed.testbed import Testbed, relay_config, slurm, storage_env, worker_code_copy
from tests.worker.atom_like import config as atom_config

ONE_GPU_JOBS = 6
SAMPLES = 100
# 3 replicas, a sample every 2 MD chunks of CHUNK_S: ~60 s of work, more than one 1-minute
# allocation holds once startup and the handoff margin are counted.
CHUNK_S = 0.1
CHECKPOINT_S = 3.0
TERMINAL = {EventKind.HANDOFF, EventKind.STOPPED, EventKind.COMPLETED, EventKind.FAILED}


class Busy(BaseModel):
    """One engine run on one node's devices, from its worker's `started` to its end event."""

    cluster: str
    slot: str  # the slot folder (allocation row id)
    job_id: str
    epoch: int
    devices: list[str]
    start: datetime
    end: datetime | None  # None: no end event (a defect the verdicts report)
    end_kind: EventKind | None = None


class GroupRecord(BaseModel):
    """One SLURM job of slots, as sacct reports it."""

    cluster: str
    group: str
    state: str
    alloc_tres: str
    start: datetime | None
    end: datetime | None


class ScenarioRun(BaseModel):
    run: str
    jobs: list[str]
    two_gpu_job: str
    victim_job: str
    victim_slot: str
    final_states: dict[str, JobState]
    busy: list[Busy]
    slot_exits: dict[str, list[WorkerEvent]]  # slot folder -> its slot_exited events (if any
    # worker ran there)
    groups: list[GroupRecord]
    handoffs: int


def scenario_config(root: Path, tb: Testbed, run: str, code: Path) -> dict[str, Any]:
    config = relay_config(root, tb, run, code)
    for cluster, entry in zip(tb.clusters, config["clusters"], strict=True):
        entry["partitions"] = [
            {
                "name": cluster.gpu_partition,
                "walltime_minutes": 1,
                "gpus_per_allocation": cluster.gpus,
                "max_pending": 1,
                "max_running": 2,
                "min_fill": 0.5,
                "fill_wait_s": 20,
            }
        ]
        # The nvidia-smi stand-in first on the workers' PATH: they see the node's 4 GPUs.
        entry["native_worker"] = [
            "env", f"PATH={cluster.nvidia_smi_dir}:/usr/bin:/bin", f"PYTHONPATH={code}",
            str(tb.worker_python), "-m", "worker_entry",
        ]  # fmt: skip
    return config


def write_job(folder: Path, title: str, gpus: int) -> None:
    folder.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "atom-like" / "fake_atom.py", folder)
    (folder / "atom.cntl").write_text(atom_config(SAMPLES, CHECKPOINT_S, CHUNK_S))
    spec = JobSpec(
        title=title,
        engine=CommandSettings(
            command=["python3", "fake_atom.py", "atom.cntl"],
            preset="atom",
            target_samples=SAMPLES,
            settle_s=0.2,
            stop_grace_s=10,
            startup_timeout_s=60,
        ),
        resources=Resources(gpus=gpus),
        checkpoint_interval_s=CHECKPOINT_S,
        max_retries=3,
    )
    (folder / "relaymd.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))


def slot_folders(tb: Testbed, run: str) -> list[tuple[str, Path]]:
    return [
        (c.name, folder)
        for c in tb.clusters
        for folder in sorted((Path(c.scratch) / run / "alloc").glob("*-g*"))
    ]


def busy_intervals(cluster: str, folder: Path) -> list[Busy]:
    """Each `started` event with its engine's devices, closed by the segment's end event or
    the slot's `slot_exited` (the supervisor writes it after the slot's processes are gone)."""
    events = read_events(folder / EVENTS_FILE, 0)[0]
    spans: list[Busy] = []
    for event in events:
        if event.kind is EventKind.STARTED and event.job_id and event.epoch is not None:
            spans.append(
                Busy(
                    cluster=cluster,
                    slot=folder.name,
                    job_id=event.job_id,
                    epoch=event.epoch,
                    devices=(event.cuda_visible_devices or "").split(","),
                    start=event.at,
                    end=None,
                )
            )
            continue
        for span in spans:
            if span.end is not None:
                continue
            ends_segment = event.kind in TERMINAL and (event.job_id, event.epoch) == (
                span.job_id,
                span.epoch,
            )
            if ends_segment or event.kind is EventKind.SLOT_EXITED:
                span.end, span.end_kind = event.at, event.kind
    return spans


def sacct_groups(tb: Testbed, since: str, groups: set[tuple[str, str]]) -> list[GroupRecord]:
    records = []
    for c in tb.clusters:
        out = slurm(
            tb, c.name, "sacct", "-a", "-X", "-n", "-P", "-S", since,
            "-o", "JobName,State,AllocTRES,Start,End",
        )  # fmt: skip
        for line in out.splitlines():
            name, state, tres, start, end = line.split("|")
            group = name.removeprefix("relaymd-")
            if (c.name, group) in groups:
                records.append(
                    GroupRecord(
                        cluster=c.name,
                        group=group,
                        state=state,
                        alloc_tres=tres,
                        start=_sacct_time(start),
                        end=_sacct_time(end),
                    )
                )
    return records


def _sacct_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text).astimezone(UTC)  # SLURM prints local time
    except ValueError:
        return None  # Unknown / None


def kill_a_slot_worker(
    tb: Testbed, run: str, state: Any, skip_job: str, root: Path
) -> tuple[str, str]:
    """SIGKILL the worker of a slot running a one-GPU job past its first checkpoint."""

    def candidate() -> tuple[str, Path] | None:
        for job in state.list_jobs(states=[JobState.RUNNING]):
            if job.id == skip_job or not job.checkpoint or job.checkpoint.step <= 0:
                continue
            alloc = state.get_allocation(job.allocation_id or "")
            if alloc is None or alloc.group_id is None:
                continue
            folder = Path(tb.cluster(alloc.cluster).scratch) / run / "alloc" / alloc.id
            if (folder / HEARTBEAT_FILE).is_file():
                return job.id, folder
        return None

    job_id, folder = wait_for("a checkpointed one-GPU job in a slot", candidate, 240, root)
    beat = Heartbeat.model_validate_json((folder / HEARTBEAT_FILE).read_text())
    os.kill(beat.pid, signal.SIGKILL)  # the real worker process, kill -9
    return job_id, folder.name


def run_scenario(root: Path, tb: Testbed) -> ScenarioRun:
    from relaymd.config import load_config
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.state import StateStore
    from relaymd.storage import open_store
    from relaymd.submission.submit import submit_directory

    run = f"s{secrets.token_hex(4)}"
    root.mkdir(parents=True, exist_ok=True)
    code = worker_code_copy()
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(scenario_config(root, tb, run, code)))
    os.environ.update(storage_env(tb))
    loaded = load_config(config_path)
    store = open_store(storage_access(loaded.config, make_secrets_provider(loaded.config.secrets)))
    state = StateStore.open(Path(loaded.config.state_path))
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")  # sacct reads local time
    jobs = []
    for i in range(ONE_GPU_JOBS + 1):
        gpus = 2 if i == 0 else 1
        write_job(root / f"job{i}", f"slots job {i} ({gpus} GPU)", gpus)
        jobs.append(submit_directory(root / f"job{i}", loaded=loaded, store=store, state=state))
    daemon = start_daemon(root, config_path, extra_env=storage_env(tb))
    try:
        victim_job, victim_slot = kill_a_slot_worker(tb, run, state, jobs[0].id, root)
        wait_for(
            "every job final",
            lambda: all((state.get_job(j.id) or j).state.is_final for j in jobs),
            420,
            root,
        )
        groups = {(c, group_of(f.name)) for c, f in slot_folders(tb, run)}
        wait_for(
            "every group ended in sacct",
            lambda: (
                len(r := sacct_groups(tb, since, groups)) == len(groups)
                and all(g.end is not None and g.state not in ("RUNNING", "PENDING") for g in r)
            ),
            180,
            root,
        )
    finally:
        stop_daemon(daemon)
    finals = {j.id: (state.get_job(j.id) or j).state for j in jobs}
    state.close()
    shutil.rmtree(code, ignore_errors=True)
    folders = slot_folders(tb, run)
    # Folders of groups that never started (cancelled while pending) have no events.
    events = {
        f.name: read_events(f / EVENTS_FILE, 0)[0]
        for _, f in folders
        if (f / EVENTS_FILE).is_file()
    }
    return ScenarioRun(
        run=run,
        jobs=[j.id for j in jobs],
        two_gpu_job=jobs[0].id,
        victim_job=victim_job,
        victim_slot=victim_slot,
        final_states=finals,
        busy=[span for c, f in folders for span in busy_intervals(c, f)],
        slot_exits={
            name: [e for e in evs if e.kind is EventKind.SLOT_EXITED]
            for name, evs in events.items()
        },
        groups=sacct_groups(tb, since, {(c, group_of(f.name)) for c, f in folders}),
        handoffs=sum(e.kind is EventKind.HANDOFF for evs in events.values() for e in evs),
    )


def final_outputs(store: ObjectStore, job_id: str, replicas: int) -> dict[int, bytes]:
    """The sample files of the job's last epoch with outputs in the bucket."""
    prefix = f"jobs/{job_id}/outputs/"
    epochs = {int(k[len(prefix) :].split("/", 1)[0]) for k in store.list_keys(prefix)}
    last = max(e for e in epochs if store.exists(f"{prefix}{e}/r0/fake.out"))
    return {k: store.get_bytes(f"{prefix}{last}/r{k}/fake.out") for k in range(replicas)}


def scenario_store(root: Path) -> ObjectStore:
    """The run's bucket, opened from the config the scenario wrote under `root`."""
    from relaymd.config import load_config
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.storage import open_store

    loaded = load_config(root / "config.yaml")
    return open_store(storage_access(loaded.config, make_secrets_provider(loaded.config.secrets)))
