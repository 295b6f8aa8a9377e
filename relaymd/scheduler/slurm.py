"""SLURM: sbatch/squeue/sacct/scancel, as snippets the daemon batches into one round trip."""

from __future__ import annotations

from collections.abc import Sequence

from relaymd.mailbox.shell import quote, shell_path
from relaymd.models import Allocation, ClusterProfile
from relaymd.scheduler import shell
from relaymd.scheduler.base import (
    JOB_NAME_PREFIX,
    Scheduler,
    SchedulerJob,
    script_folder,
    submit_marker_lines,
)
from relaymd.scheduler.slurm_parse import (
    SACCT_FAILED_MARK,
    SACCT_FIELDS,
    SACCT_MARK,
    SQUEUE_FORMAT,
    SQUEUE_MARK,
    SqueueMemo,
    parse_slurm_query,
)


class SlurmScheduler(Scheduler):
    template = "slurm.sbatch.j2"
    output_name = "slurm-%j.out"

    def __init__(self, profile: ClusterProfile) -> None:
        super().__init__(profile)
        # A parsed line depends on the line alone: reused while squeue prints it unchanged.
        self.squeue_memo = SqueueMemo()

    def submit_snippet(self, alloc: Allocation, script_path: str) -> str:
        alloc_id = shell.allocation_id(alloc.id)
        folder = script_folder(script_path)
        ok, err = submit_marker_lines(alloc_id)
        # cd: the job's working directory is its allocation folder. --output and --job-name are
        # repeated on the command line, where the shell expands `$SCRATCH`-style paths.
        return "\n".join(
            [
                f"msg=$(cd {shell_path(folder)} && sbatch --parsable"
                f" --job-name={self.job_name(alloc.scheduler_key)}"
                f" --output={shell_path(folder + '/' + self.output_name)}"
                f" --open-mode=append {shell_path(script_path)} 2>&1); rc=$?",
                # --parsable prints `<id>` or `<id>;<cluster>`; warnings may come first.
                "sid=$(printf '%s\\n' \"$msg\""
                " | sed -n 's/^\\([0-9][0-9_]*\\)\\(;.*\\)\\{0,1\\}$/\\1/p' | tail -n 1)",
                f'if [ "$rc" -eq 0 ] && [ -n "$sid" ]; then {ok}; else {err}; fi',
            ]
        )

    def query_snippet(self, profile: ClusterProfile, ended_ids: Sequence[str]) -> str:
        ids = ",".join(shell.scheduler_id(i) for i in dict.fromkeys(ended_ids))
        lines = [
            # squeue failing is a failed query; absent from squeue alone never means ended.
            f"sq=$(squeue --me --noheader --format={quote(SQUEUE_FORMAT)}) || exit $?",
            f"printf '%s\\n' {SQUEUE_MARK}",
            f"printf '%s\\n' \"$sq\" | awk -F'|' 'index($2, \"{JOB_NAME_PREFIX}\") == 1'",
        ]
        if ids:
            # Only ids squeue no longer lists can have ended: asking slurmdbd about the rest
            # every cycle would load it for nothing (one awk, however many allocations).
            # With step rows (no -X): a step's OUT_OF_MEMORY/NODE_FAIL explains the job's end.
            # Reason is asked for when this sacct knows it. sacct failing (slurmdbd down)
            # degrades to "no news" instead of failing the whole poll.
            lines += [
                f"gone=$(printf '%s\\n' \"$sq\" | awk -F'|' -v want={ids}"
                ' \'BEGIN {n = split(want, w, ",")} {live[$1] = 1}'
                ' END {s = ""; for (i = 1; i <= n; i++) if (!(w[i] in live))'
                ' s = s (s == "" ? "" : ",") w[i]; print s}\')',
                'if [ -n "$gone" ]; then',
                f"printf '%s\\n' {SACCT_MARK}",
                f'sacct -P -j "$gone" -o {SACCT_FIELDS},Reason 2>/dev/null'
                f' || sacct -P -j "$gone" -o {SACCT_FIELDS}'
                f" || printf '%s %s\\n' {SACCT_FAILED_MARK} \"$?\"",
                "fi",
            ]
        return "\n".join(lines)

    def parse_query(self, text: str) -> list[SchedulerJob]:
        return parse_slurm_query(text, self.allocation_id_from_name, self.squeue_memo)

    def cancel_snippet(self, scheduler_ids: Sequence[str]) -> str:
        ids = " ".join(shell.scheduler_id(i) for i in dict.fromkeys(scheduler_ids))
        return f"scancel {ids}" if ids else "true"
