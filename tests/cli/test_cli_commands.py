"""The operator CLI end to end: real `relaymd` processes on tmp state/data/config."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

import pytest

from relaymd import __version__
from tests.support.cli_env import CliEnv, job_count, make_job_dir, stored_objects


def test_version_and_help(cli: CliEnv) -> None:
    done = cli.run("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"relaymd {__version__}")
    for args in (["--help"], ["jobs", "--help"], ["submit", "--help"], ["demo", "--help"]):
        done = cli.run(*args)
        assert done.returncode == 0, done.stderr
        assert "Usage" in done.stdout


def test_status_and_listings_on_an_empty_state(cli: CliEnv) -> None:
    done = cli.run("status")
    assert done.returncode == 0, done.stderr
    status = cli.json("status")
    assert sum(status["jobs"].values()) == 0
    assert cli.json("jobs", "list") == []
    assert cli.json("workers", "list") == []
    [cluster] = cli.json("clusters", "list")
    assert (cluster["name"], cluster["enabled"]) == ("local", True)


def test_submit_then_manage_a_job(cli: CliEnv) -> None:
    directory = make_job_dir(cli.root)
    done = cli.run("submit", str(directory), "--priority", "5")
    assert done.returncode == 0, done.stderr
    [job] = cli.json("jobs", "list")
    assert (job["state"], job["spec"]["title"], job["spec"]["priority"]) == ("queued", "tiny", 5)
    # The registered bundle exists in storage with the recorded checksum.
    bundle = cli.storage_dir / job["bundle"]["key"]
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == job["bundle"]["sha256"]

    prefix = job["id"][:8]
    assert cli.json("jobs", "show", prefix)["id"] == job["id"]
    assert cli.run("jobs", "hold", prefix).returncode == 0
    assert cli.json("jobs", "show", prefix)["state"] == "held"
    assert cli.run("jobs", "hold", prefix).returncode == 0  # idempotent
    assert cli.run("jobs", "release", prefix).returncode == 0
    assert cli.json("jobs", "show", prefix)["state"] == "queued"
    history = cli.json("jobs", "history", prefix)
    assert (history["job"]["id"], history["segments"]) == (job["id"], [])
    assert cli.run("jobs", "cancel", prefix).returncode == 0
    assert cli.json("jobs", "show", prefix)["state"] == "cancelled"
    again = cli.run("jobs", "cancel", prefix)
    assert again.returncode == 5 and "already cancelled" in again.stderr
    assert cli.run("jobs", "requeue", prefix).returncode == 0
    assert cli.json("jobs", "list", "--state", "queued")[0]["id"] == job["id"]
    assert cli.json("status")["jobs"]["queued"] == 1


def test_several_directories_and_flags_only(cli: CliEnv) -> None:
    first, second = (cli.root / "a", cli.root / "b")
    for directory in (first, second):
        directory.mkdir()
        (directory / "run.sh").write_text("echo hi\n")
    done = cli.run(
        "submit",
        str(first),
        str(second),
        "--engine",
        "command",
        "--command",
        "bash run.sh",
        "--checkpoint-glob",
        "*.chk",
        "--gpus",
        "0",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    submitted = json.loads(done.stdout)["submitted"]
    assert [s["title"] for s in submitted] == ["a", "b"]
    jobs = cli.json("jobs", "list")
    assert {j["spec"]["engine"]["command"][0] for j in jobs} == {"bash"}
    assert len(stored_objects(cli)) == 2


def test_dry_run_uploads_nothing(cli: CliEnv) -> None:
    directory = make_job_dir(cli.root)
    done = cli.run("submit", str(directory), "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["spec"]["engine"]["total_steps"] == 1000
    assert (job_count(cli), stored_objects(cli)) == (0, [])


@pytest.mark.parametrize(
    ("case", "code", "expected"),
    [
        ("missing_dir", 4, ["nowhere", "no such directory"]),
        ("unknown_cluster", 2, ["placement", "clusterZ", "configured clusters: local"]),
        ("invalid_spec", 2, ["relaymd.yaml", "engine.openmm.total_step", "unknown field"]),
        ("missing_input", 4, ["engine.state", "state.xml"]),
        ("invalid_config", 2, ["config.yaml", "storage.url"]),
        ("config_is_dir", 2, ["is a directory"]),
        ("config_missing", 2, ["nope.yaml", "config file not found"]),
        ("storage_unwritable", 1, ["upload", "failed"]),
        ("broken_symlink", 2, ["broken symlink", "nothing was uploaded"]),
        ("second_dir_unpackable", 2, ["bad", "not a regular file", "nothing was uploaded"]),
    ],
)
def test_bad_input_is_named_and_leaves_nothing(
    cli: CliEnv, case: str, code: int, expected: list[str]
) -> None:
    directory = make_job_dir(cli.root)
    args = ["submit", str(directory)]
    env: dict[str, str] = {}
    if case == "missing_dir":
        args = ["submit", str(cli.root / "nowhere")]
    elif case == "unknown_cluster":
        args += ["--cluster", "clusterZ"]
    elif case == "invalid_spec":
        (directory / "relaymd.yaml").write_text("title: t\nengine: {kind: openmm, total_step: 5}\n")
    elif case == "missing_input":
        (directory / "state.xml").unlink()
    elif case == "invalid_config":
        cli.config.write_text("storage: {url: ftp://nowhere}\nclusters: [local]\n")
    elif case == "config_is_dir":
        env["RELAYMD_CONFIG"] = str(cli.root)
    elif case == "config_missing":
        env["RELAYMD_CONFIG"] = str(cli.root / "nope.yaml")
    elif case == "broken_symlink":
        (directory / "restraints.xml").symlink_to(cli.root / "gone.xml")
    elif case == "second_dir_unpackable":
        # The first directory is fine; the second holds a FIFO. Neither may be uploaded.
        bad = make_job_dir(cli.root, "bad")
        os.mkfifo(bad / "pipe")
        args.append(str(bad))
    elif case == "storage_unwritable":
        # The storage root is a plain file: the upload itself fails.
        cli.data_dir.mkdir(parents=True)
        cli.storage_dir.write_text("not a folder")
    done = cli.run(*args, env=env)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "error:" in done.stderr
    for fragment in expected:
        assert fragment in done.stderr
    assert job_count(cli) == 0
    objects = [] if case == "storage_unwritable" else stored_objects(cli)
    assert objects == []


def test_config_init_validate_and_refuse_overwrite(cli: CliEnv) -> None:
    target = cli.root / "new" / "config.yaml"
    assert cli.run("config", "init", str(target)).returncode == 0
    done = cli.run("config", "validate", str(target))
    assert done.returncode == 0 and done.stdout.startswith("OK"), done.stderr
    refused = cli.run("config", "init", str(target))
    assert refused.returncode == 5 and "already exists" in refused.stderr
    assert cli.run("config", "init", str(target), "--force").returncode == 0
    target.write_text(target.read_text().replace("stale_after_s", "stale_after"))
    bad = cli.run("config", "validate", str(target))
    assert bad.returncode == 2
    assert str(target) in bad.stderr and "daemon.stale_after: unknown field" in bad.stderr
    shown = cli.json("config", "show")
    assert shown["config"]["clusters"][0]["name"] == "local"
    # The starter's local cluster works as written: its worker command is a real argv.
    target.write_text(target.read_text().replace("stale_after:", "stale_after_s:"))
    checked = cli.run("clusters", "test", "local", "--json", env={"RELAYMD_CONFIG": str(target)})
    assert checked.returncode == 0, (checked.stdout, checked.stderr)
    checks = {c["name"]: c for c in json.loads(checked.stdout)["checks"]}
    assert checks["native_worker"]["ok"] and checks["scratch"]["ok"]


def test_unknown_job_and_cluster_exit_4(cli: CliEnv) -> None:
    done = cli.run("jobs", "show", "jdoesnotexist")
    assert done.returncode == 4 and "no job matches" in done.stderr
    done = cli.run("clusters", "disable", "clusterZ")
    assert done.returncode == 4 and "clusterZ" in done.stderr


def test_cluster_disable_enable_and_daemon_status(cli: CliEnv) -> None:
    assert cli.run("clusters", "disable", "local").returncode == 0
    assert cli.json("clusters", "list")[0]["enabled"] is False
    assert cli.run("clusters", "enable", "local").returncode == 0
    assert cli.json("clusters", "list")[0]["enabled"] is True
    done = cli.run("daemon", "status", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["running"] is False


def test_changed_host_key_shows_its_own_state_with_the_ssh_keygen_fix(cli: CliEnv) -> None:
    from relaymd.models.state import ClusterReachability, ClusterStatus
    from relaymd.state import StateStore

    assert cli.run("status").returncode == 0  # creates the state file
    message = (
        "cluster local: the host key of 127.0.0.1:2221 does NOT match the one recorded in"
        " /home/u/.ssh/known_hosts (Host key is not trusted). This may be a man-in-the-middle"
        " attack; do not connect until your admins confirm the key changed, then run"
        " `ssh-keygen -f /home/u/.ssh/known_hosts -R '[127.0.0.1]:2221'` and"
        " `ssh-keyscan -p 2221 127.0.0.1 >> /home/u/.ssh/known_hosts`"
    )
    state = StateStore.open(cli.db)
    state.upsert_cluster_status(
        ClusterStatus(
            name="local", reachability=ClusterReachability.HOST_KEY_CHANGED, last_error=message
        )
    )
    state.close()
    fix = "ssh-keygen -f /home/u/.ssh/known_hosts -R '[127.0.0.1]:2221'"
    for args in (("clusters", "list"), ("status",)):
        done = cli.run(*args)
        assert done.returncode == 0, done.stderr
        assert "host-key-changed" in done.stdout and fix in done.stdout, done.stdout
    [cluster] = cli.json("clusters", "list")
    assert cluster["status"]["reachability"] == "host-key-changed"


def test_gpu_time_per_job_and_in_status(cli: CliEnv) -> None:
    from datetime import timedelta

    from relaymd.models import Allocation, AllocationState, Segment, SegmentOutcome, utcnow
    from relaymd.state import StateStore

    assert cli.run("submit", str(make_job_dir(cli.root))).returncode == 0
    [job] = cli.json("jobs", "list")
    # Play the daemon: one ended allocation that ran one segment of the job.
    start = utcnow() - timedelta(hours=1)
    with StateStore.open(cli.db) as store:
        store.insert_allocation(
            Allocation(
                id="a1",
                cluster="local",
                partition="local",
                image="openmm",
                state=AllocationState.ENDED,
                walltime_s=7200,
                started_at=start,
                ended_at=start + timedelta(seconds=1000),
            )
        )
        store.insert_segment(
            Segment(
                job_id=job["id"],
                epoch=1,
                allocation_id="a1",
                cluster="local",
                started_at=start + timedelta(seconds=100),
                ended_at=start + timedelta(seconds=900),
                outcome=SegmentOutcome.HANDOFF,
            )
        )
    usage = cli.json("jobs", "history", job["id"])["gpu_usage"]
    assert (usage["allocated_gpu_s"], usage["simulating_gpu_s"]) == (1000, 800)
    assert (usage["startup_gpu_s"], usage["tail_gpu_s"], usage["idle_gpu_s"]) == (100, 100, 200)
    shown = cli.run("jobs", "show", job["id"])
    assert "1000 GPU-s allocated = 800 simulating + 200 idle" in shown.stdout
    assert cli.json("status")["gpu_usage"]["allocated_gpu_s"] == 1000
    assert "gpu time" in cli.run("status").stdout


def _row(cli: CliEnv, job_id: str) -> tuple[str, str, int]:
    """(state column, job row data, audit records of the job), read from the file itself."""
    with sqlite3.connect(cli.db) as db:
        state, data = db.execute("SELECT state, data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        audits = db.execute("SELECT count(*) FROM events WHERE job_id = ?", (job_id,)).fetchone()
    return state, data, int(audits[0])


def _submitted(cli: CliEnv) -> str:
    assert cli.run("submit", str(make_job_dir(cli.root))).returncode == 0
    [job] = cli.json("jobs", "list")
    return str(job["id"])


def _play_the_daemon(cli: CliEnv, job_id: str, **changes: object) -> None:
    from relaymd.state import StateStore

    with StateStore.open(cli.db) as store:
        job = store.get_job(job_id)
        assert job is not None
        store.update_job(job.model_copy(update=changes))


def test_actions_the_state_machine_forbids_are_refused_and_change_nothing(cli: CliEnv) -> None:
    from relaymd.models import JobState

    job_id = _submitted(cli)
    _play_the_daemon(cli, job_id, state=JobState.RUNNING, allocation_id="a1", epoch=1)
    refused = {
        # A job on an allocation is moved on by the daemon only: no hold, no release.
        ("hold", "running"): f"job {job_id} is running; only a queued job can be held",
        ("release", "running"): f"job {job_id} is running, not held",
    }
    _refused_leaving_no_trace(cli, job_id, refused)
    _play_the_daemon(cli, job_id, state=JobState.COMPLETED, allocation_id=None)
    refused = {
        ("requeue", "completed"): f"job {job_id} is completed; submit it again instead",
        ("cancel", "completed"): f"job {job_id} is already completed",
        ("hold", "completed"): f"job {job_id} is completed; only a queued job can be held",
        ("release", "completed"): f"job {job_id} is completed, not held",
    }
    _refused_leaving_no_trace(cli, job_id, refused)


def test_an_action_on_a_job_the_daemon_writes_meanwhile_is_not_refused(
    cli: CliEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon writes a running job's progress every cycle. The CLI reads the job under
    the write lock it changes it with, so a daemon write cannot slip in between and make the
    operator's cancel fail with "changed while this command ran" (a CI run's red, 12-05)."""
    from relaymd.cli import cmd_jobs, context
    from relaymd.models import JobState
    from relaymd.state import StateStore
    from relaymd.state import queries as q

    job_id = _submitted(cli)
    _play_the_daemon(cli, job_id, state=JobState.RUNNING, allocation_id="a1", epoch=1)
    for name in [n for n in os.environ if n.startswith(("RELAYMD_", "XDG_"))]:
        monkeypatch.delenv(name)
    for name, value in cli.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(context, "_loaded", None)
    # The daemon, on a connection that never waits for the lock: it writes the step it read
    # from a heartbeat the moment the CLI has read the job, unless the CLI holds the lock.
    connection = sqlite3.connect(cli.db, timeout=0, isolation_level=None)
    daemon = StateStore(connection, cli.db)
    daemon.run(q.open_connection(cli.db))
    connection.execute("PRAGMA busy_timeout = 0")
    daemon_writes: list[str] = []

    def daemon_writes_the_step() -> None:
        seen = daemon.get_job(job_id)
        assert seen is not None
        try:
            daemon.update_job(seen.model_copy(update={"step": 999}))
            daemon_writes.append("written")
        except sqlite3.OperationalError as exc:
            daemon_writes.append(str(exc))

    read_job = context.find_job

    def read_then_the_daemon_writes(store: StateStore, prefix: str) -> object:
        job = read_job(store, prefix)
        daemon_writes_the_step()
        return job

    monkeypatch.setattr(context, "find_job", read_then_the_daemon_writes)
    cmd_jobs.cancel(job_id)  # raised CliError (exit 5) when the daemon's write came between
    daemon_writes_the_step()
    daemon.close()
    assert daemon_writes == ["database is locked", "written"]
    state, data, _ = _row(cli, job_id)
    assert (state, json.loads(data)["operator_request"]) == ("running", "cancel")
    assert json.loads(data)["step"] == 999  # the daemon's write, after the operator's


def _refused_leaving_no_trace(
    cli: CliEnv, job_id: str, refused: dict[tuple[str, str], str]
) -> None:
    for (action, state), message in refused.items():
        before = _row(cli, job_id)
        assert before[0] == state
        done = cli.run("jobs", action, job_id)
        assert done.returncode == 5, (action, done.stderr)
        assert message in done.stderr, (action, done.stderr)
        assert "Traceback" not in done.stderr
        assert _row(cli, job_id) == before  # neither the row nor the audit log moved


def test_a_job_action_and_its_audit_record_commit_together(cli: CliEnv) -> None:
    job_id = _submitted(cli)
    before = _row(cli, job_id)
    with sqlite3.connect(cli.db) as db:  # the audit log refuses to grow
        db.execute(
            "CREATE TRIGGER no_audit BEFORE INSERT ON events"
            " BEGIN SELECT RAISE(ABORT, 'audit log full'); END"
        )
    for action in ("hold", "cancel"):
        done = cli.run("jobs", action, job_id)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert _row(cli, job_id) == before  # no state change without its audit record
    with sqlite3.connect(cli.db) as db:
        db.execute("DROP TRIGGER no_audit")
    assert cli.run("jobs", "hold", job_id).returncode == 0
    state, _, audits = _row(cli, job_id)
    assert (state, audits) == ("held", before[2] + 1)
