"""The daemon's real read script against real allocation folders, measured as a login node
would see it: processes spawned, CPU seconds of bash and everything it ran, bytes returned.

Folders hold realistic heartbeats (a running OpenMM worker with a GPU and a checkpoint), an
events.jsonl history and a worker.log. Commands resolve through a private PATH of symlinks to
/usr/bin, with or without python3: without it the read script takes its per-folder bash
fallback, which is main's script before ADR 0012 (the "before" column).

Used by bench/poll_scale.py (`--login-node`) and by tests/daemon/test_daemon_login_read.py.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from relaymd.mailbox.carrier import (
    ClusterSnapshot,
    ReadRequest,
)
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.mailbox.reading import HeartbeatMemo
from relaymd.mailbox.scratch_read import (
    build_read_script,
    parse_read_output,
)
from relaymd.models import (
    CheckpointRef,
    GpuInfo,
)
from relaymd.transport.base import whole_or_nothing

TOOLS = ("head", "tail", "base64", "tr", "wc", "find", "rm", "cat")
HISTORY_EVENTS = 20


class PollCost(BaseModel):
    processes: int  # fork/clone/vfork of new processes by bash and its descendants (strace)
    cpu_s: float  # user + system of bash and its children (getrusage RUSAGE_CHILDREN)
    returned_bytes: int


def login_path(root: Path, *, python: bool) -> str:
    """A PATH holding only what a login node surely has, plus python3 when asked."""
    bin_dir = root / ("bin-py" if python else "bin-nopy")
    bin_dir.mkdir(parents=True, exist_ok=True)
    names = (*TOOLS, "python3") if python else TOOLS
    for name in names:
        target = shutil.which(name, path="/usr/bin:/bin")
        if target is None:
            raise SystemExit(f"{name} not found in /usr/bin:/bin")
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(os.path.realpath(target))
    return str(bin_dir)


def heartbeat(alloc_id: str, seq: int) -> Heartbeat:
    return Heartbeat(
        allocation_id=alloc_id,
        seq=seq,
        state=WorkerState.RUNNING,
        job_id=f"j{alloc_id[1:]}",
        epoch=3,
        step=seq * 25_000,
        total_steps=50_000_000,
        progress=min(1.0, seq * 25_000 / 50_000_000),
        ns_per_day=412.5 + seq % 7,
        last_checkpoint=CheckpointRef(
            epoch=3,
            seq=seq // 20,
            step=(seq // 20) * 500_000,
            prefix=f"jobs/j{alloc_id[1:]}/checkpoints/e3/s{seq // 20}",
            manifest_sha256="ab" * 32,
        ),
        gpus=[GpuInfo(name="NVIDIA A100-SXM4-80GB", memory_total_mib=81920)],
        platform="CUDA",
        deadline=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=4),
        handoff_margin_s=95.0,
        hostname="gpu-node-017.cluster.example.edu",
        pid=123456,
        worker_version="0.4.0",
    )


def event_line(alloc_id: str, n: int) -> bytes:
    event = WorkerEvent(
        kind=EventKind.CHECKPOINT if n else EventKind.STARTED,
        allocation_id=alloc_id,
        job_id=f"j{alloc_id[1:]}",
        epoch=3,
    )
    return event.model_dump_json().encode() + b"\n"


class LoginNodeTree:
    """N allocation folders under a temp scratch, and the daemon's view of them."""

    def __init__(self, n: int, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="relaymd-login-"))
        self.ids = [f"a{i:06d}" for i in range(n)]
        self.seq = dict.fromkeys(self.ids, 1)
        self.offsets = dict.fromkeys(self.ids, 0)
        self.memo = HeartbeatMemo()
        for alloc_id in self.ids:
            folder = self.folder(alloc_id)
            folder.mkdir(parents=True)
            self.beat(alloc_id)
            history = b"".join(event_line(alloc_id, k) for k in range(HISTORY_EVENTS))
            (folder / "events.jsonl").write_bytes(history)
            self.offsets[alloc_id] = len(history)  # the daemon has caught up
            (folder / "worker.log").write_text("step 1000 ok\n" * 200)

    def folder(self, alloc_id: str) -> Path:
        return self.root / "alloc" / alloc_id

    def beat(self, alloc_id: str) -> None:
        """The worker's atomic rewrite: a new file renamed over the old one, seq moved."""
        self.seq[alloc_id] += 1
        path = self.folder(alloc_id) / "heartbeat.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(heartbeat(alloc_id, self.seq[alloc_id]).model_dump_json())
        tmp.replace(path)

    def append_event(self, alloc_id: str) -> None:
        with open(self.folder(alloc_id) / "events.jsonl", "ab") as fh:
            fh.write(event_line(alloc_id, 1))

    def requests(self) -> list[ReadRequest]:
        return [ReadRequest(allocation_id=a, events_offset=self.offsets[a]) for a in self.ids]

    def poll(self, *, python: bool = True, count: bool = True) -> tuple[ClusterSnapshot, PollCost]:
        """One real poll; the snapshot's offsets become the daemon's, like the runner does."""
        requests = self.requests()
        script, token = build_read_script(str(self.root), "true", requests, memo=self.memo)
        wrapped = whole_or_nothing(script)
        env = {"PATH": login_path(self.root, python=python), "LC_ALL": "C"}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            ["/bin/bash", "-s"], input=wrapped.encode(), capture_output=True, env=env, check=True
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        processes = count_processes(wrapped, env) if count else -1
        stdout = out.stdout.decode()
        snapshot = parse_read_output(stdout, token, "bench", requests, lambda _t: [], self.memo)
        for alloc_id, files in snapshot.files.items():
            self.offsets[alloc_id] = files.events_offset
        return snapshot, PollCost(processes=processes, cpu_s=cpu, returned_bytes=len(out.stdout))


def count_processes(script: str, env: dict[str, str]) -> int:
    """New processes (not threads) created while bash runs `script`, counted by strace."""
    strace = shutil.which("strace")
    if strace is None:
        raise RuntimeError("strace is needed to count processes (apt-get install strace)")
    with tempfile.NamedTemporaryFile(prefix="relaymd-strace-") as trace:
        subprocess.run(
            [strace, "-f", "-qq", "-e", "trace=process", "-o", trace.name, "/bin/bash", "-s"],
            input=script.encode(),
            capture_output=True,
            env=env,
            check=True,
        )
        lines = Path(trace.name).read_text().splitlines()
    return sum(
        1
        for line in lines
        if any(f" {call}(" in line for call in ("fork", "vfork", "clone", "clone3"))
        and "CLONE_THREAD" not in line
        and "resumed>" not in line
    )


class LoginRow(BaseModel):
    allocations: int
    script: str  # "before" (per-folder bash, main's script) or "after" (one python3)
    poll: str
    cost: PollCost


STEADY_MOVED = 10  # heartbeats rewritten in a quiet poll (one event appended too)


def measure(n: int, *, python: bool) -> list[LoginRow]:
    """First poll (empty memo: a daemon start), a poll after every worker beat (poll interval
    = heartbeat interval, one in ten appending an event), and a quiet poll (10 beats, 1 event)."""
    tree = LoginNodeTree(n)
    script = "after" if python else "before"
    rows = []
    _, cost = tree.poll(python=python)
    rows.append(LoginRow(allocations=n, script=script, poll="first", cost=cost))
    for i, alloc_id in enumerate(tree.ids):
        tree.beat(alloc_id)
        if i % 10 == 0:
            tree.append_event(alloc_id)
    _, cost = tree.poll(python=python)
    rows.append(LoginRow(allocations=n, script=script, poll="every heartbeat moved", cost=cost))
    for alloc_id in tree.ids[:STEADY_MOVED]:
        tree.beat(alloc_id)
    tree.append_event(tree.ids[-1])
    _, cost = tree.poll(python=python)
    rows.append(LoginRow(allocations=n, script=script, poll="quiet", cost=cost))
    shutil.rmtree(tree.root, ignore_errors=True)
    return rows


def table(rows: list[LoginRow]) -> str:
    lines = [
        "## Login-node cost per poll (`bench/poll_scale.py --login-node`)",
        "",
        "The daemon's real read script, run by `bash -s` (wrapped whole-or-nothing as the"
        " transports send it) against real allocation folders in a temp scratch: a realistic"
        " heartbeat (running OpenMM worker, one GPU, a checkpoint), 20 lines of events history"
        " and a worker log each. Processes: forks/clones of bash and its descendants, counted"
        " by `strace -f`. CPU: user + system of bash and all it ran (getrusage of children)."
        " Returned: bytes of stdout. *before* = the per-folder bash function (main's script,"
        " still the fallback without python3); *after* = one `python3 -I -S` (ADR 0012)."
        " Polls: *first* (daemon start, nothing known), *every heartbeat moved* (poll"
        " interval = heartbeat interval, one worker in ten appends an event), *quiet*"
        f" ({STEADY_MOVED} heartbeats moved, one event). Scheduler query not included (`true`).",
        "",
        "| allocations | script | poll | processes | login-node CPU | returned |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.allocations} | {row.script} | {row.poll} | {row.cost.processes} |"
            f" {row.cost.cpu_s:.3f} s | {row.cost.returned_bytes / 1024:.1f} KiB |"
        )
    lines += [
        "",
        "Targets at 1 000 allocations: <= 10 processes per poll whatever the number of"
        " allocations, <= 0.3 s login-node CPU, <= 200 KiB returned.",
    ]
    return "\n".join(lines)


def main(after_sizes: list[int], before_sizes: list[int]) -> str:
    rows: list[LoginRow] = []
    for n in before_sizes:
        rows += measure(n, python=False)
    for n in after_sizes:
        rows += measure(n, python=True)
    rows.sort(key=lambda r: (r.allocations, r.script != "before"))
    return table(rows)
