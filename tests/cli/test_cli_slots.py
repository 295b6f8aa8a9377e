"""`relaymd workers list` and `relaymd status` on a multi-GPU allocation (ADR 0026): one row per
GPU slot with its index, job and held state; status counts the slots."""

from __future__ import annotations

from relaymd.models import Allocation, AllocationState, utcnow
from relaymd.state import StateStore
from tests.support.cli_env import CliEnv
from tests.support.slot_rows import slot_row


def _slot(i: int, **fields: object) -> Allocation:
    return slot_row(
        "agrp",
        i,
        cluster="local",
        partition="local",
        state=AllocationState.RUNNING,
        scheduler_id="4242",
        started_at=utcnow(),
        **fields,
    )


def _play_daemon(cli: CliEnv) -> None:
    """A 4-GPU group: slot 0 leads job jbig on two GPUs (slot 1 held), slot 2 runs jone,
    slot 3 is idle."""
    assert cli.run("status").returncode == 0  # creates the state file
    with StateStore.open(cli.db) as store:
        store.insert_allocation(_slot(0, job_id="jbig"))
        store.insert_allocation(_slot(1, held_by="agrp-g0"))
        store.insert_allocation(_slot(2, job_id="jone"))
        store.insert_allocation(_slot(3))


def test_workers_list_shows_each_slot(cli: CliEnv) -> None:
    _play_daemon(cli)
    done = cli.run("workers", "list")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if "agrp-g" in line}
    assert sorted(lines) == [f"agrp-g{i}" for i in range(4)]
    assert "0/4" in lines["agrp-g0"] and "jbig" in lines["agrp-g0"]
    assert "1/4" in lines["agrp-g1"] and "held for job jbig" in lines["agrp-g1"]
    assert all("4242" in line for line in lines.values())  # one SLURM job
    rows = {r["id"]: r for r in cli.json("workers", "list")}
    assert rows["agrp-g1"]["held_by"] == "agrp-g0" and rows["agrp-g1"]["group_id"] == "agrp"
    assert rows["agrp-g2"]["slot"] == 2 and rows["agrp-g2"]["job_id"] == "jone"


def test_status_counts_the_slots(cli: CliEnv) -> None:
    _play_daemon(cli)
    slots = cli.json("status")["gpu_slots"]
    assert slots == {"groups": 1, "slots": 4, "busy": 2, "held": 1, "idle": 1}
    shown = cli.run("status").stdout
    assert "4 in 1 multi-GPU allocation(s): 2 running a job, 1 held, 1 idle" in shown
