"""Parsing squeue and sacct output into SchedulerJob, folding sacct's step rows into the job."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import BaseModel, Field

from relaymd.scheduler.base import EndState, SchedulerJob, SchedulerPhase, state_word

SQUEUE_MARK = "@@relaymd-squeue"
SACCT_MARK = "@@relaymd-sacct"
SACCT_FAILED_MARK = "@@relaymd-sacct-failed"
# squeue -o: one line per job, `|` separated (relaymd job names never contain `|`).
SQUEUE_FORMAT = "%i|%j|%T|%r|%N"
SACCT_FIELDS = "JobID,JobName,State,ExitCode,NodeList"

_PENDING = {
    "PENDING",
    "CONFIGURING",  # nodes booting: the worker has not started yet
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
    "SPECIAL_EXIT",
}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
_ENDED = {s.value for s in EndState} - {EndState.UNKNOWN.value} | {"REVOKED"}
# A step that says the node or the memory failed explains a job line that only says it died.
_STEP_WINS = (EndState.NODE_FAIL, EndState.OUT_OF_MEMORY)
_VAGUE_JOB_ENDS = {EndState.FAILED, EndState.CANCELLED, EndState.COMPLETED, EndState.UNKNOWN}
_NO_NODE = {"", "None assigned", "(null)", "None"}


class SqueueRow(BaseModel):
    job_id: str
    name: str
    state: str
    reason: str | None
    node: str | None


class SacctRow(BaseModel):
    job_id: str
    name: str
    state: str
    exit_code: str | None = None
    node: str | None = None
    reason: str | None = None


class SlurmQueryOutput(BaseModel):
    squeue: list[SqueueRow] = Field(default_factory=list)
    squeue_lines: list[str] = Field(default_factory=list)  # the raw line of each squeue row
    sacct: list[SacctRow] = Field(default_factory=list)
    sacct_ok: bool = True


def phase_of(raw: str) -> SchedulerPhase:
    word = state_word(raw)
    if word in _ENDED:
        return SchedulerPhase.ENDED
    if word in _RUNNING:
        return SchedulerPhase.RUNNING
    return SchedulerPhase.PENDING  # PENDING-like or a state this version does not know


def _opt(value: str) -> str | None:
    value = value.strip()
    return None if value in _NO_NODE else value


class SqueueMemo:
    """The last poll's squeue lines and what each parsed into: a running allocation's line is
    the same poll after poll, so only new or changed lines are parsed (kept: this poll's)."""

    def __init__(self) -> None:
        self.rows: dict[str, SqueueRow] = {}
        self.jobs: dict[str, SchedulerJob | None] = {}
        self.parses = 0  # squeue lines parsed into models (counted by tests)


def split_sections(text: str, reuse: Mapping[str, SqueueRow] | None = None) -> SlurmQueryOutput:
    out = SlurmQueryOutput()
    section = ""
    header: list[str] = []
    for line in text.splitlines():
        if line.startswith("@@relaymd-"):
            section = line.split()[0]
            if section == SACCT_FAILED_MARK:
                out.sacct_ok = False
            header = []
            continue
        if not line.strip():
            continue
        if section == SQUEUE_MARK and reuse is not None and line in reuse:
            out.squeue.append(reuse[line])
            out.squeue_lines.append(line)
            continue
        cells = line.split("|")
        if section == SQUEUE_MARK and len(cells) >= 5:
            out.squeue_lines.append(line)
            out.squeue.append(
                SqueueRow(
                    job_id=cells[0].strip(),
                    name=cells[1].strip(),
                    state=cells[2].strip(),
                    reason=_opt(cells[3]),
                    node=_opt("|".join(cells[4:])),
                )
            )
        elif section == SACCT_MARK:
            if not header:  # sacct -P prints a header naming the columns it has
                header = [c.strip() for c in cells]
                continue
            row = dict(zip(header, cells, strict=False))
            if not row.get("JobID"):
                continue
            out.sacct.append(
                SacctRow(
                    job_id=row["JobID"].strip(),
                    name=row.get("JobName", "").strip(),
                    state=row.get("State", "").strip(),
                    exit_code=_opt(row.get("ExitCode", "")),
                    node=_opt(row.get("NodeList", "")),
                    reason=_opt(row.get("Reason", "")),
                )
            )
    return out


def fold_end(job_state: EndState, step_states: list[EndState]) -> EndState:
    if job_state in _VAGUE_JOB_ENDS:
        for wins in _STEP_WINS:
            if wins in step_states:
                return wins
    return job_state


def _squeue_job(
    sq: SqueueRow, allocation_id_from_name: Callable[[str], str | None]
) -> SchedulerJob | None:
    alloc_id = allocation_id_from_name(sq.name)
    if alloc_id is None:
        return None
    phase = phase_of(sq.state)
    return SchedulerJob(
        allocation_id=alloc_id,
        scheduler_id=sq.job_id,
        phase=phase,
        raw_state=sq.state,
        end_state=EndState.parse(sq.state) if phase is SchedulerPhase.ENDED else None,
        reason=sq.reason,
        node=sq.node,
    )


def parse_slurm_query(
    text: str,
    allocation_id_from_name: Callable[[str], str | None],
    memo: SqueueMemo | None = None,
) -> list[SchedulerJob]:
    out = split_sections(text, memo.rows if memo else None)
    jobs: dict[str, SchedulerJob] = {}
    seen_jobs: dict[str, SchedulerJob | None] = {}
    for line, sq in zip(out.squeue_lines, out.squeue, strict=True):
        if memo is not None and line in memo.jobs:
            job = memo.jobs[line]
        else:
            job = _squeue_job(sq, allocation_id_from_name)
            if memo is not None:
                memo.parses += 1
        seen_jobs[line] = job
        if job is not None:
            jobs[sq.job_id] = job
    if memo is not None:  # this poll's lines only: the memo never outgrows squeue's output
        memo.rows = dict(zip(out.squeue_lines, out.squeue, strict=True))
        memo.jobs = seen_jobs
    job_rows = {r.job_id: r for r in out.sacct if "." not in r.job_id}
    steps: dict[str, list[SacctRow]] = {}
    for row in out.sacct:
        if "." in row.job_id:
            steps.setdefault(row.job_id.split(".", 1)[0], []).append(row)
    for job_id, row in job_rows.items():
        alloc_id = allocation_id_from_name(row.name)
        if alloc_id is None:
            continue
        phase = phase_of(row.state)
        seen = jobs.get(job_id)
        if phase is not SchedulerPhase.ENDED:
            if seen is None:  # squeue missed it (or slurmctld lags): sacct's view is all we have
                jobs[job_id] = SchedulerJob(
                    allocation_id=alloc_id,
                    scheduler_id=job_id,
                    phase=phase,
                    raw_state=row.state,
                    reason=row.reason,
                    exit_code=row.exit_code,
                    node=row.node,
                )
            continue
        step_ends = [EndState.parse(s.state) for s in steps.get(job_id, [])]
        jobs[job_id] = SchedulerJob(
            allocation_id=alloc_id,
            scheduler_id=job_id,
            phase=SchedulerPhase.ENDED,
            raw_state=row.state,
            end_state=fold_end(EndState.parse(row.state), step_ends),
            reason=row.reason,
            exit_code=row.exit_code,
            node=row.node or (seen.node if seen else None),
        )
    return list(jobs.values())
