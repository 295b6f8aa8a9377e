"""A cluster's squeue lines are parsed once: a line printed unchanged poll after poll (every
running allocation's) is not parsed again, and what it yields is the same as a fresh parse."""

from __future__ import annotations

from relaymd.models import ClusterProfile
from relaymd.scheduler import SchedulerJob, SlurmScheduler
from relaymd.scheduler.slurm_parse import SqueueMemo, parse_slurm_query

PROFILE = ClusterProfile.model_validate(
    {
        "name": "clusterA",
        "ssh": {"host": "login.a"},
        "scratch": "$SCRATCH/relaymd",
        "partitions": [{"name": "gpu", "walltime_minutes": 240}],
        "native_worker": ["relaymd-worker"],
    }
)


def squeue(lines: list[str]) -> str:
    return "@@relaymd-squeue\n" + "".join(line + "\n" for line in lines)


def running(n: int) -> list[str]:
    return [f"{100 + i}|relaymd-a{i:05d}|RUNNING|None|gpu-{i}" for i in range(n)]


def fresh(text: str) -> list[SchedulerJob]:
    return parse_slurm_query(text, SlurmScheduler(PROFILE).allocation_id_from_name)


def test_unchanged_lines_are_not_parsed_again() -> None:
    scheduler = SlurmScheduler(PROFILE)
    lines = [*running(50), "7|someone-elses-job|RUNNING|None|gpu-9"]
    first = scheduler.parse_query(squeue(lines))
    assert scheduler.squeue_memo.parses == 51
    again = scheduler.parse_query(squeue(lines))
    assert scheduler.squeue_memo.parses == 51, "no line changed: nothing parsed"
    assert again == first == fresh(squeue(lines))

    lines[3] = "103|relaymd-a00003|COMPLETING|None|gpu-3"  # one allocation's line changed
    lines.append("200|relaymd-a00200|PENDING|Priority|")  # and one is new
    third = scheduler.parse_query(squeue(lines))
    assert scheduler.squeue_memo.parses == 53
    assert third == fresh(squeue(lines))
    assert {j.allocation_id: j.raw_state for j in third}["a00003"] == "COMPLETING"


def test_the_memo_holds_only_the_last_polls_lines() -> None:
    memo = SqueueMemo()
    allocation_id = SlurmScheduler(PROFILE).allocation_id_from_name
    parse_slurm_query(squeue(running(40)), allocation_id, memo)
    parse_slurm_query(squeue(running(40)[30:]), allocation_id, memo)  # 30 allocations ended
    assert len(memo.rows) == len(memo.jobs) == 10
    # A line gone and back is parsed again (it is new to the memo).
    parse_slurm_query(squeue(running(40)), allocation_id, memo)
    assert memo.parses == 40 + 0 + 30


def test_sacct_still_decides_an_end_for_a_remembered_line() -> None:
    """The memo covers squeue lines only: sacct's rows are read every poll as before."""
    scheduler = SlurmScheduler(PROFILE)
    lines = running(2)
    scheduler.parse_query(squeue(lines))
    text = squeue(lines) + (
        "@@relaymd-sacct\nJobID|JobName|State|ExitCode|NodeList|Reason\n"
        "101|relaymd-a00001|NODE_FAIL|0:0|gpu-1|None\n"
    )
    jobs = {j.allocation_id: j for j in scheduler.parse_query(text)}
    assert jobs["a00001"].end_state is not None and jobs["a00001"].end_state.value == "NODE_FAIL"
    assert jobs["a00000"].raw_state == "RUNNING"
    assert scheduler.squeue_memo.parses == 2
