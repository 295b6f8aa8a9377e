"""Schedulers: how allocations are submitted, queried and cancelled (slurm, direct).

Everything here is a pure string builder or parser, so the daemon can batch the snippets of
many allocations into one SSH round trip (invariant 6) and unit tests need no cluster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field

from relaymd.ids import slot_allocation_id
from relaymd.mailbox.layout import alloc_dir
from relaymd.models import Allocation, ClusterProfile
from relaymd.scheduler import shell
from relaymd.scheduler.templates import render, render_file

JOB_NAME_PREFIX = "relaymd-"
# Seconds before the walltime at which SLURM sends its walltime warning (`--signal=B:USR1@N`,
# up to 60 s early): it only confirms the worker's deadline (worker_entry/deadline.py), so it may
# come early without cutting the segment. Capped at half a short walltime.
SIGNAL_LEAD_S = 120


class SchedulerPhase(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    ENDED = "ended"


def state_word(raw: str) -> str:
    """A scheduler state's first word: `CANCELLED by 1000` -> CANCELLED, `RUNNING+` -> RUNNING."""
    return raw.strip().split(" ", 1)[0].rstrip("+").upper()


class EndState(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"
    NODE_FAIL = "NODE_FAIL"
    BOOT_FAIL = "BOOT_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    DEADLINE = "DEADLINE"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, raw: str) -> EndState:
        """`CANCELLED by 1000` -> CANCELLED; a state this version does not know -> UNKNOWN."""
        try:
            return cls(state_word(raw))
        except ValueError:
            return cls.UNKNOWN


class SchedulerJob(BaseModel):
    """The scheduler's view of one allocation, folded from all its rows."""

    allocation_id: str
    scheduler_id: str
    phase: SchedulerPhase
    raw_state: str
    end_state: EndState | None = None
    reason: str | None = None
    exit_code: str | None = None
    node: str | None = None


class SubmitResult(BaseModel):
    allocation_id: str
    scheduler_id: str | None = None
    error: str | None = None


class JobScriptContext(BaseModel):
    """Everything a job-script template sees; values are raw, the template quotes them."""

    allocation_id: str
    job_name: str
    cluster: str
    partition: str
    walltime_s: int
    time: str  # SLURM's [D-]HH:MM:SS
    signal_lead_s: int
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gres: str | None = None
    cpus_per_task: int = 1
    memory: str | None = None
    extra_sbatch: list[str] = Field(default_factory=list)
    output: str | None = None  # only when a literal path (sbatch does not expand variables)
    alloc_dir: str
    scratch: str
    setup: list[str] = Field(default_factory=list)
    apptainer: str | None = None  # set: run the image with apptainer, else native_worker
    image: str | None = None
    gpus: int = 0
    native_worker: list[str] = Field(default_factory=list)
    worker_args: list[str] = Field(default_factory=list)
    # GPU slots (ADR 0026): every slot's mailbox folder (unexpanded), slot i at index i; more
    # than one runs `relaymd-worker slots` instead of one worker.
    slot_dirs: list[str] = Field(default_factory=list)


def slurm_time(seconds: int) -> str:
    days, rest = divmod(max(int(seconds), 60), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def slot_dirs(alloc: Allocation, scratch: str) -> list[str]:
    """Every slot's mailbox folder of `alloc`'s group, slot i at index i (ADR 0026); empty for
    a one-GPU allocation, whose worker reads `alloc_dir`."""
    if alloc.group_id is None or alloc.slot_count < 2:
        return []
    return [
        alloc_dir(scratch, slot_allocation_id(alloc.group_id, i)) for i in range(alloc.slot_count)
    ]


def script_folder(script_path: str) -> str:
    """The folder a job script is in: where it is submitted from and its output goes."""
    return script_path.rsplit("/", 1)[0] if "/" in script_path else "."


class Scheduler(ABC):
    template: ClassVar[str]
    output_name: ClassVar[str]

    def __init__(self, profile: ClusterProfile) -> None:
        self.profile = profile

    # -- names ---------------------------------------------------------------------------
    def job_name(self, allocation_id: str) -> str:
        return JOB_NAME_PREFIX + shell.allocation_id(allocation_id)

    def allocation_id_from_name(self, name: str) -> str | None:
        if not name.startswith(JOB_NAME_PREFIX):
            return None
        rest = name[len(JOB_NAME_PREFIX) :]
        return rest if rest.isascii() and rest.isalnum() else None

    # -- the job script ------------------------------------------------------------------
    def script_context(
        self, alloc: Allocation, profile: ClusterProfile, worker_args: Sequence[str]
    ) -> JobScriptContext:
        part = profile.partition(alloc.partition)
        folder = alloc_dir(profile.scratch, alloc.id)
        sb = shell.sbatch_value
        gres = None
        if part.gpus_per_allocation > 0:
            kind = f"{sb('gpu_type', part.gpu_type)}:" if part.gpu_type else ""
            gres = f"gpu:{kind}{part.gpus_per_allocation}"
        image: str | None = None
        apptainer: str | None = None
        native: list[str] = []
        location = profile.images.get(alloc.image)
        if location is not None:
            image = location.sif or location.uri
            apptainer = profile.apptainer
        elif profile.native_worker:
            native = list(profile.native_worker)
        else:
            raise shell.UnsafeValue(
                f"cluster {profile.name} has no image {alloc.image!r}: add it under `images:`"
                " in the cluster profile (or set `native_worker:`)"
            )
        output = f"{folder}/{self.output_name}"
        return JobScriptContext(
            allocation_id=shell.allocation_id(alloc.id),
            job_name=self.job_name(alloc.scheduler_key),
            cluster=profile.name,
            partition=sb("partition", part.name),
            walltime_s=alloc.walltime_s,
            time=slurm_time(alloc.walltime_s),
            signal_lead_s=max(1, min(SIGNAL_LEAD_S, alloc.walltime_s // 2)),
            account=sb("account", part.account) if part.account else None,
            qos=sb("qos", part.qos) if part.qos else None,
            constraint=sb("constraint", part.constraint) if part.constraint else None,
            gres=gres,
            cpus_per_task=part.cpus_per_task,
            memory=sb("memory", part.memory) if part.memory else None,
            extra_sbatch=[
                shell.sbatch_option(f"partition {part.name} extra_sbatch", line)
                for line in part.extra_sbatch
            ],
            output=output if shell.is_literal_path(output) else None,
            alloc_dir=folder,
            scratch=profile.scratch,
            setup=list(profile.setup),
            apptainer=apptainer,
            image=image,
            gpus=part.gpus_per_allocation,
            native_worker=native,
            worker_args=[str(a) for a in worker_args],
            slot_dirs=slot_dirs(alloc, profile.scratch),
        )

    def render_job_script(
        self, alloc: Allocation, profile: ClusterProfile, worker_args: Sequence[str]
    ) -> str:
        context = self.script_context(alloc, profile, worker_args)
        if profile.template:  # a site's own template (checked when the config loaded)
            return render_file(Path(profile.template), job=context)
        return render(self.template, job=context)

    # -- snippets ------------------------------------------------------------------------
    @abstractmethod
    def submit_snippet(self, alloc: Allocation, script_path: str) -> str:
        """Bash that submits `script_path` and prints one `@@submit <alloc> ok|err ...` line."""

    def parse_submit(self, text: str) -> list[SubmitResult]:
        results: list[SubmitResult] = []
        for line in text.splitlines():
            parts = line.strip().split(" ", 3)
            if len(parts) < 3 or parts[0] != "@@submit":
                continue
            alloc_id, status = parts[1], parts[2]
            detail = parts[3].strip() if len(parts) > 3 else ""
            if status == "ok" and self._valid_id(detail):
                results.append(SubmitResult(allocation_id=alloc_id, scheduler_id=detail))
            else:
                results.append(
                    SubmitResult(allocation_id=alloc_id, error=detail or "submission failed")
                )
        return results

    @staticmethod
    def _valid_id(value: str) -> bool:
        try:
            shell.scheduler_id(value)
        except shell.UnsafeValue:
            return False
        return True

    @abstractmethod
    def query_snippet(self, profile: ClusterProfile, ended_ids: Sequence[str]) -> str:
        """Bash printing every live relaymd allocation of this user, and the given ids' ends."""

    @abstractmethod
    def parse_query(self, text: str) -> list[SchedulerJob]: ...

    @abstractmethod
    def cancel_snippet(self, scheduler_ids: Sequence[str]) -> str: ...


def submit_marker_lines(alloc_id: str) -> tuple[str, str]:
    """printf commands for the ok/err marker; `$sid` / `$msg` hold the values."""
    ok = f"printf '@@submit %s ok %s\\n' {alloc_id} \"$sid\""
    one_line = "$(printf '%s' \"$msg\" | tr '\\n\\r' '  ' | cut -c1-400)"
    err = f"printf '@@submit %s err %s\\n' {alloc_id} \"{one_line}\""
    return ok, err
