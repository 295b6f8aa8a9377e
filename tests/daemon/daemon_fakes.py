"""A fake transport (runs each script with a local bash, counting round trips) and a fake
scheduler whose queue is a text file on the "cluster": enough to exercise the real read and
write scripts without SLURM."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any


class BashTransport:
    def __init__(self, profile: Any = None, *, interactive: bool = False) -> None:
        self.round_trips = 0
        self.scripts: list[str] = []
        self.closed = False

    async def run(self, script: str, *, timeout: float | None = None) -> SimpleNamespace:  # noqa: ASYNC109
        self.round_trips += 1
        self.scripts.append(script)
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-s",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(script.encode()), timeout)
        return SimpleNamespace(
            exit_status=proc.returncode, stdout=out.decode(), stderr=err.decode()
        )

    def close(self) -> None:
        self.closed = True


class FileQueueScheduler:
    """Queue lines `<allocation id> <scheduler id> <phase> [end state]` in `<scratch>/queue`."""

    def __init__(self, scratch: Path) -> None:
        self.queue = scratch / "queue"

    def query_snippet(self, profile: Any, ended_ids: list[str]) -> str:
        return f"cat {shlex.quote(str(self.queue))} 2>/dev/null; true"

    def parse_query(self, text: str) -> list[SimpleNamespace]:
        jobs = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                jobs.append(
                    SimpleNamespace(
                        allocation_id=parts[0],
                        scheduler_id=parts[1],
                        phase=parts[2],
                        end_state=parts[3] if len(parts) > 3 else None,
                        exit_code=None,
                        node="n1",
                        reason=None,
                        raw_state=parts[2],
                    )
                )
        return jobs

    def render_job_script(self, alloc: Any, profile: Any, worker_args: list[str]) -> str:
        return "#!/bin/bash\nexec worker " + " ".join(shlex.quote(a) for a in worker_args) + "\n"

    def submit_snippet(self, alloc: Any, script_path: str) -> str:
        q = shlex.quote(str(self.queue))
        return (
            f"n=$(( $(wc -l < {q} 2>/dev/null || echo 0) + 1000 )); "
            f"echo {alloc.id} $n pending >> {q}; echo SUBMITTED {alloc.id} $n"
        )

    def parse_submit(self, text: str) -> list[SimpleNamespace]:
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "SUBMITTED":
                out.append(
                    SimpleNamespace(allocation_id=parts[1], scheduler_id=parts[2], error=None)
                )
        return out

    def cancel_snippet(self, ids: list[str]) -> str:
        q = shlex.quote(str(self.queue))
        pattern = "|".join(ids)
        return f"grep -Ev ' ({pattern}) ' {q} > {q}.new; mv {q}.new {q}"
