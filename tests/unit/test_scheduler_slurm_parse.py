"""SLURM snippets and parsers, on squeue/sacct output as SLURM 22.05 prints it."""

from __future__ import annotations

import subprocess

import pytest

from relaymd.models import Allocation, ClusterProfile
from relaymd.scheduler import EndState, SchedulerJob, SchedulerPhase, SlurmScheduler, UnsafeValue

PROFILE = ClusterProfile.model_validate(
    {
        "name": "clusterA",
        "ssh": {"host": "login.a"},
        "scratch": "$SCRATCH/relaymd",
        "partitions": [{"name": "gpu", "walltime_minutes": 240}],
        "native_worker": ["relaymd-worker"],
    }
)
S = SlurmScheduler(PROFILE)


def query_output(squeue: str, sacct: str | None) -> str:
    text = "@@relaymd-squeue\n" + squeue
    if sacct is not None:
        text += "@@relaymd-sacct\n" + sacct
    return text


def by_alloc(text: str) -> dict[str, SchedulerJob]:
    return {j.allocation_id: j for j in S.parse_query(text)}


def test_job_names_round_trip() -> None:
    assert S.job_name("a1m88ghrt07vev61") == "relaymd-a1m88ghrt07vev61"
    assert S.allocation_id_from_name("relaymd-a1m88ghrt07vev61") == "a1m88ghrt07vev61"
    assert S.allocation_id_from_name("other-job") is None
    assert S.allocation_id_from_name("relaymd-a b") is None
    with pytest.raises(UnsafeValue):
        S.job_name("a1;rm")


def test_squeue_pending_and_running() -> None:
    text = query_output(
        "101|relaymd-apend0001|PENDING|Priority|\n"
        "102|relaymd-arun00002|RUNNING|None|gpu-node-07\n"
        "103|relaymd-acomp0003|COMPLETING|None|gpu-node-08\n"
        "104|relaymd-aconf0004|CONFIGURING|None|gpu-node-09\n",
        None,
    )
    jobs = by_alloc(text)
    assert jobs["apend0001"].phase is SchedulerPhase.PENDING
    assert jobs["apend0001"].reason == "Priority"
    assert jobs["apend0001"].node is None
    assert jobs["arun00002"].phase is SchedulerPhase.RUNNING
    assert jobs["arun00002"].node == "gpu-node-07"
    assert jobs["arun00002"].scheduler_id == "102"
    assert jobs["acomp0003"].phase is SchedulerPhase.RUNNING
    assert jobs["aconf0004"].phase is SchedulerPhase.PENDING
    assert all(j.end_state is None for j in jobs.values())


def test_sacct_ends_with_real_rows() -> None:
    # Verbatim from the testbed's sacct -P (header included), SLURM 22.05.
    sacct = (
        "JobID|JobName|State|ExitCode|NodeList|Reason\n"
        "1|relaymd-a1m88ghrt07vev61|COMPLETED|0:0|nodea|None\n"
        "1.batch|batch|COMPLETED|0:0|nodea|\n"
        "2|relaymd-a1m88ghyqjp3342f|CANCELLED by 1001|0:0|None assigned|None\n"
        "3|relaymd-a1m88gj4z994yxnn|TIMEOUT|0:0|nodea|None\n"
        "3.batch|batch|CANCELLED|0:9|nodea|\n"
    )
    jobs = by_alloc(query_output("", sacct))
    done = jobs["a1m88ghrt07vev61"]
    assert (done.phase, done.end_state, done.exit_code, done.node) == (
        SchedulerPhase.ENDED,
        EndState.COMPLETED,
        "0:0",
        "nodea",
    )
    cancelled = jobs["a1m88ghyqjp3342f"]
    assert cancelled.end_state is EndState.CANCELLED
    assert cancelled.raw_state == "CANCELLED by 1001"
    assert cancelled.node is None and cancelled.reason is None
    # The batch step's CANCELLED (SLURM killing it) does not hide the job's TIMEOUT.
    assert jobs["a1m88gj4z994yxnn"].end_state is EndState.TIMEOUT


@pytest.mark.parametrize(
    ("job_state", "step_rows", "expected"),
    [
        ("FAILED", ["7.batch|batch|OUT_OF_MEMORY|0:125|n1|"], EndState.OUT_OF_MEMORY),
        ("CANCELLED by 0", ["7.0|python|NODE_FAIL|0:0|n1|"], EndState.NODE_FAIL),
        (
            "FAILED",
            ["7.batch|batch|FAILED|1:0|n1|", "7.extern|extern|COMPLETED|0:0|n1|"],
            EndState.FAILED,
        ),
        ("PREEMPTED", ["7.batch|batch|CANCELLED|0:15|n1|"], EndState.PREEMPTED),
        ("NODE_FAIL", ["7.batch|batch|CANCELLED|0:9|n1|"], EndState.NODE_FAIL),
        ("BOOT_FAIL", [], EndState.BOOT_FAIL),
        ("DEADLINE", [], EndState.DEADLINE),
        ("OUT_OF_MEMORY", ["7.batch|batch|OUT_OF_MEMORY|0:125|n1|"], EndState.OUT_OF_MEMORY),
    ],
)
def test_step_rows_fold_into_the_job(
    job_state: str, step_rows: list[str], expected: EndState
) -> None:
    sacct = "JobID|JobName|State|ExitCode|NodeList|Reason\n"
    sacct += f"7|relaymd-aseven007|{job_state}|0:0|n1|None\n" + "".join(r + "\n" for r in step_rows)
    [job] = S.parse_query(query_output("", sacct))
    assert job.phase is SchedulerPhase.ENDED
    assert job.end_state is expected


def test_sacct_without_reason_column_and_requeued_job() -> None:
    sacct = (
        "JobID|JobName|State|ExitCode|NodeList\n"
        "8|relaymd-aeight008|REQUEUED|0:0|n2\n"
        "9|relaymd-anine0009|RUNNING|0:0|n3\n"
        "10|relaymd-aten00010|SOMETHING_NEW|0:0|n3\n"
    )
    jobs = by_alloc(query_output("", sacct))
    assert jobs["aeight008"].phase is SchedulerPhase.PENDING
    assert jobs["anine0009"].phase is SchedulerPhase.RUNNING
    # A state this version does not know is never taken for an end.
    assert jobs["aten00010"].phase is SchedulerPhase.PENDING


def test_sacct_end_wins_over_squeue_and_absence_is_not_an_end() -> None:
    text = query_output(
        "20|relaymd-alive0020|RUNNING|None|n1\n21|relaymd-adone0021|COMPLETING|None|n1\n",
        "JobID|JobName|State|ExitCode|NodeList|Reason\n"
        "21|relaymd-adone0021|FAILED|1:0|n1|None\n"
        "21.batch|batch|FAILED|1:0|n1|\n"
        "22|relaymd-aqueued22|PENDING|0:0|None assigned|Priority\n",
    )
    jobs = by_alloc(text)
    assert jobs["alive0020"].phase is SchedulerPhase.RUNNING
    assert jobs["adone0021"].end_state is EndState.FAILED and jobs["adone0021"].exit_code == "1:0"
    assert jobs["aqueued22"].phase is SchedulerPhase.PENDING
    # Not in squeue and not in sacct: no news, so not reported at all.
    assert "agone0023" not in jobs


def test_other_jobs_and_failed_sacct_are_ignored() -> None:
    text = (
        query_output("30|interactive|RUNNING|None|n1\n31|relaymd-athirty31|RUNNING|None|n1\n", "")
        + "@@relaymd-sacct-failed 1\n"
    )
    assert [j.allocation_id for j in S.parse_query(text)] == ["athirty31"]


def test_snippets_reject_non_numeric_ids() -> None:
    for bad in ["1;reboot", "$(id)", "12 13"]:
        with pytest.raises(UnsafeValue):
            S.query_snippet(PROFILE, [bad])
        with pytest.raises(UnsafeValue):
            S.cancel_snippet([bad])


def test_query_and_cancel_snippets() -> None:
    q = S.query_snippet(PROFILE, ["12", "13", "12"])
    assert "squeue --me --noheader --format='%i|%j|%T|%r|%N'" in q
    assert "want=12,13 " in q
    assert 'sacct -P -j "$gone" -o JobID,JobName,State,ExitCode,NodeList,Reason' in q
    assert "sacct" not in S.query_snippet(PROFILE, [])
    assert S.cancel_snippet(["5", "6"]) == "scancel 5 6"
    assert S.cancel_snippet([]) == "true"
    for snippet in (q, S.cancel_snippet(["5"])):
        assert subprocess.run(["bash", "-n"], input=snippet, text=True).returncode == 0


def fake_sbatch_run(tmp_path: object, sbatch_body: str) -> str:
    """Run the submit snippet with a fake `sbatch` on PATH (real bash, real parsing)."""
    from pathlib import Path

    root = Path(str(tmp_path))
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/bash\n" + sbatch_body)
    sbatch.chmod(0o755)
    folder = root / "alloc" / "a1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.sh").write_text("#!/bin/bash\n")
    alloc = Allocation(id="a1", cluster="clusterA", partition="gpu", image="x", walltime_s=60)
    snippet = S.submit_snippet(alloc, f"{folder}/job.sh")
    done = subprocess.run(
        ["bash", "-c", snippet],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    return done.stdout


def test_submit_ok_with_warning_and_cluster_suffix(tmp_path: object) -> None:
    out = fake_sbatch_run(
        tmp_path,
        'echo "sbatch: warning: something odd" >&2\necho "4242;clusterA"\n',
    )
    [result] = S.parse_submit(out)
    assert (result.allocation_id, result.scheduler_id, result.error) == ("a1", "4242", None)


def test_submit_error_is_one_line(tmp_path: object) -> None:
    out = fake_sbatch_run(
        tmp_path,
        'echo "sbatch: error: Batch job submission failed:" >&2\n'
        'echo "Invalid account or account/partition combination specified" >&2\nexit 1\n',
    )
    [result] = S.parse_submit(out)
    assert result.scheduler_id is None
    assert result.error == (
        "sbatch: error: Batch job submission failed: Invalid account or account/partition"
        " combination specified"
    )


def test_parse_submit_ignores_noise_and_bad_ids() -> None:
    text = "junk\n@@submit a1 ok 17\n@@submit a2 ok 17;rm\n@@submit a3 err Invalid qos\n"
    results = S.parse_submit(text)
    assert [(r.allocation_id, r.scheduler_id, r.error) for r in results] == [
        ("a1", "17", None),
        ("a2", None, "17;rm"),
        ("a3", None, "Invalid qos"),
    ]


@pytest.mark.parametrize(
    ("live", "asked"),
    [("12 14_2", "13"), ("", "12,13,14_2"), ("12 13 14_2", None)],
)
def test_sacct_is_asked_only_about_jobs_squeue_no_longer_lists(
    live: str, asked: str | None
) -> None:
    """The real snippet in bash, with squeue and sacct stood in by shell functions."""
    rows = "".join(f"{i}|relaymd-a{i}|RUNNING|None|n1\\n" for i in live.split())
    script = (
        f"squeue() {{ printf '{rows}'; }}\n"
        'sacct() { echo "SACCT $*"; }\n' + S.query_snippet(PROFILE, ["12", "13", "14_2"])
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    calls = [line for line in out.stdout.splitlines() if line.startswith("SACCT")]
    if asked is None:
        assert calls == [] and "@@relaymd-sacct" not in out.stdout
    else:
        assert calls == [f"SACCT -P -j {asked} -o JobID,JobName,State,ExitCode,NodeList,Reason"]
