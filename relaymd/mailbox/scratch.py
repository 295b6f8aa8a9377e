"""The first mailbox carrier: shared scratch, reached by one shell script per read or write.

Each call is one round trip over the cluster's transport (invariant 6). Because the scheduler
is driven by shell on the same login node, its commands ride in the same script: the query
(squeue, sacct) in the read, the submits and the cancel in the write. Without them this is
just a MailboxCarrier (relaymd.mailbox.carrier).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from relaymd.mailbox.carrier import ClusterSnapshot, MailboxWrites, ReadRequest
from relaymd.mailbox.reading import HeartbeatMemo
from relaymd.mailbox.scratch_read import build_read_script, parse_read_output
from relaymd.mailbox.scratch_write import (
    WritePlan,
    WriteResult,
    build_write_script,
    parse_write_output,
)


class ScriptOutput(Protocol):
    @property
    def stdout(self) -> str: ...


# Runs one bash script on the login node (the transport's `run`, with its timeout).
RunScript = Callable[[str], Awaitable[ScriptOutput]]


@dataclass(frozen=True)
class SchedulerQuery:
    """The scheduler's query snippet and the parser of what it prints."""

    snippet: str
    parse: Callable[[str], Iterable[Any]]


_NO_QUERY = SchedulerQuery("true", lambda _text: [])


class ScratchCarrier:
    """Mailboxes under `<scratch>/alloc/` on a cluster's shared filesystem."""

    def __init__(
        self, scratch: str, run: RunScript, memo: HeartbeatMemo | None = None, cluster: str = ""
    ) -> None:
        self.scratch = scratch
        self.cluster = cluster
        self._run = run
        self.memo = memo
        self.last_parse_cpu_s = 0.0  # CPU spent parsing the last read (not waiting for it)

    async def read(
        self,
        requests: Sequence[ReadRequest],
        *,
        sweep_keep: Sequence[str] | None = None,
        query: SchedulerQuery | None = None,
    ) -> ClusterSnapshot:
        """Every requested mailbox and, with `query`, the scheduler's view: one round trip.
        Its `query_ok` is False when the script did not run to its end or the query failed."""
        query = query or _NO_QUERY
        asked = list(requests)
        script, token = build_read_script(
            self.scratch,
            query.snippet,
            asked,
            sweep_keep=None if sweep_keep is None else list(sweep_keep),
            memo=self.memo,
        )
        result = await self._run(script)
        cpu = time.process_time()
        snapshot = parse_read_output(
            result.stdout, token, self.cluster, asked, query.parse, self.memo
        )
        self.last_parse_cpu_s = time.process_time() - cpu
        return snapshot

    async def write(
        self,
        writes: MailboxWrites,
        *,
        parse_submit: Callable[[str], Iterable[Any]] | None = None,
    ) -> WriteResult:
        """Folders, files and removals in one script, then (for a WritePlan) the scheduler's
        submits, skipped for an allocation whose folder or files failed, and its cancel."""
        plan = writes if isinstance(writes, WritePlan) else WritePlan(**dict(writes))
        script, token = build_write_script(self.scratch, plan)
        result = await self._run(script)
        return parse_write_output(result.stdout, token, plan, parse_submit or (lambda _t: []))
