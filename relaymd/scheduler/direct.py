"""The direct scheduler: workers as plain background processes on the cluster host.

Used by the embedded `local` cluster and by hosts without SLURM. Submitting starts a detached
wrapper (setsid + nohup) that waits for one of `max_workers` slots (until then the allocation
is pending), runs job.sh under `timeout <walltime>`, and records the outcome in files of the
allocation folder, so the state survives the daemon:

    direct.pid      the wrapper's pid (the scheduler id)
    direct.started  written when the job got a slot and started (pending -> running)
    direct.exit     "<exit status> <completed|failed|timeout|cancelled>" when it ended
    direct.out      the job's stdout and stderr

Slots are lock directories under `<scratch>/direct-slots/`; a slot whose holder died is reclaimed.
"""

from __future__ import annotations

from collections.abc import Sequence

from relaymd.ids import group_of
from relaymd.mailbox.layout import alloc_root
from relaymd.mailbox.shell import quote, shell_path
from relaymd.models import Allocation, ClusterProfile
from relaymd.scheduler import shell
from relaymd.scheduler.base import (
    EndState,
    Scheduler,
    SchedulerJob,
    SchedulerPhase,
    script_folder,
    submit_marker_lines,
)

PID_FILE = "direct.pid"
STARTED_FILE = "direct.started"
EXIT_FILE = "direct.exit"
OUTPUT_FILE = "direct.out"
SLOTS_DIR = "direct-slots"
KILL_GRACE_S = 30  # after the walltime's SIGTERM, SIGKILL follows this much later
MARK = "@@relaymd-direct"

# $1 folder, $2 walltime seconds, $3 max workers, $4 slots folder. $0 is relaymd-<alloc id>,
# which is how query and cancel recognise the process (pids get reused).
_WRAPPER = r"""
d=$1; w=$2; n=$3; slots=$4; child=; slot=; cancelled=
echo $$ > "$d/direct.pid.tmp" && mv -f "$d/direct.pid.tmp" "$d/direct.pid"
trap 'cancelled=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT HUP
trap '[ -n "$slot" ] && rm -rf "$slot"' EXIT
mkdir -p "$slots"
while [ -z "$cancelled" ] && [ -z "$slot" ]; do
  i=1
  while [ "$i" -le "$n" ]; do
    s="$slots/$i"
    if mkdir "$s" 2>/dev/null; then echo $$ > "$s/pid"; slot=$s; break; fi
    p=$(cat "$s/pid" 2>/dev/null)
    if [ -n "$p" ] && ! kill -0 "$p" 2>/dev/null; then rm -rf "$s"
    elif [ -z "$p" ] && [ -n "$(find "$s" -maxdepth 0 -mmin +1 2>/dev/null)" ]; then rm -rf "$s"
    fi
    i=$((i + 1))
  done
  [ -n "$slot" ] || { sleep 2 & wait $!; }
done
start=$(date +%s)
rc=143
if [ -z "$cancelled" ]; then
  echo "$start" > "$d/direct.started"
  timeout -k KILL_GRACE "$w" bash "$d/job.sh" & child=$!
  while :; do
    wait "$child"; rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
fi
kind=failed
if [ -n "$cancelled" ]; then kind=cancelled
elif [ "$rc" -eq 0 ]; then kind=completed
elif { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && [ $(( $(date +%s) - start )) -ge "$w" ]; then
  kind=timeout
fi
echo "$rc $kind" > "$d/direct.exit.tmp" && mv -f "$d/direct.exit.tmp" "$d/direct.exit"
""".replace("KILL_GRACE", str(KILL_GRACE_S))

_END_KINDS = {
    "completed": EndState.COMPLETED,
    "failed": EndState.FAILED,
    "timeout": EndState.TIMEOUT,
    "cancelled": EndState.CANCELLED,
}


class DirectScheduler(Scheduler):
    template = "direct.sh.j2"
    output_name = OUTPUT_FILE

    def _root(self) -> str:
        return self.profile.scratch.rstrip("/")

    def submit_snippet(self, alloc: Allocation, script_path: str) -> str:
        alloc_id = shell.allocation_id(alloc.id)
        folder = script_folder(script_path)
        ok, err = submit_marker_lines(alloc_id)
        slots = shell_path(f"{self._root()}/{SLOTS_DIR}")
        return "\n".join(
            [
                f"d={shell_path(folder)}",
                'rm -f "$d/direct.pid" "$d/direct.exit" "$d/direct.started"',
                f"if [ ! -r {shell_path(script_path)} ]; then msg='job script missing';"
                f" {err}; else",
                # Detached: own session, no terminal, output to direct.out; survives the daemon.
                f"setsid nohup bash -c {quote(_WRAPPER)} {self.job_name(alloc_id)}"
                f' "$d" {int(alloc.walltime_s)} {int(self.profile.max_workers)} {slots}'
                f' >>"$d/{OUTPUT_FILE}" 2>&1 </dev/null &',
                # The wrapper writes its own pid (setsid may fork); wait briefly for it.
                'i=0; while [ ! -s "$d/direct.pid" ] && [ $i -lt 100 ]; do sleep 0.05;'
                " i=$((i + 1)); done",
                'sid=$(cat "$d/direct.pid" 2>/dev/null)',
                f'if [ -n "$sid" ]; then {ok}; else',
                f'  msg="the job did not start (see $d/{OUTPUT_FILE})"; {err}; fi',
                "fi",
            ]
        )

    def query_snippet(self, profile: ClusterProfile, ended_ids: Sequence[str]) -> str:
        wanted = " ".join(shell.scheduler_id(i) for i in dict.fromkeys(ended_ids))
        root = shell_path(alloc_root(profile.scratch))
        # Live allocations are always listed (like squeue); ended ones only when asked for.
        return "\n".join(
            [
                f"want=' {wanted} '",
                f"printf '%s host %s\\n' {MARK} \"$(hostname)\"",
                f"for f in {root}/*/{PID_FILE}; do",
                '  [ -r "$f" ] || continue',
                '  d=${f%/*}; a=${d##*/}; p=$(cat "$f" 2>/dev/null)',
                '  case "$p" in ""|*[!0-9]*) continue;; esac',
                f'  if [ ! -r "$d/{EXIT_FILE}" ] && kill -0 "$p" 2>/dev/null'
                ' && ps -ww -o args= -p "$p" 2>/dev/null | grep -q " relaymd-$a "; then',
                f'    if [ -e "$d/{STARTED_FILE}" ]; then s=running; else s=pending; fi',
                f'    printf \'%s job %s %s %s\\n\' {MARK} "$a" "$p" "$s"',
                '  else case "$want" in *" $p "*)',
                f'    e=$(cat "$d/{EXIT_FILE}" 2>/dev/null || echo "- lost")',
                f'    printf \'%s job %s %s ended %s\\n\' {MARK} "$a" "$p" "$e";;',
                "  esac; fi",
                "done",
                "true",
            ]
        )

    def parse_query(self, text: str) -> list[SchedulerJob]:
        host: str | None = None
        jobs: list[SchedulerJob] = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[0] != MARK:
                continue
            if parts[1] == "host":
                host = parts[2]
                continue
            if parts[1] != "job" or len(parts) < 5:
                continue
            # A GPU group runs from its slot 0's folder; the daemon knows it by the group id.
            alloc_id, pid, phase = group_of(parts[2]), parts[3], parts[4]
            if phase in ("pending", "running"):
                jobs.append(
                    SchedulerJob(
                        allocation_id=alloc_id,
                        scheduler_id=pid,
                        phase=SchedulerPhase(phase),
                        raw_state=phase.upper(),
                        node=host if phase == "running" else None,
                    )
                )
            elif phase == "ended":
                code = parts[5] if len(parts) > 5 else "-"
                kind = parts[6] if len(parts) > 6 else "lost"
                end = _END_KINDS.get(kind, EndState.UNKNOWN)
                jobs.append(
                    SchedulerJob(
                        allocation_id=alloc_id,
                        scheduler_id=pid,
                        phase=SchedulerPhase.ENDED,
                        raw_state=kind.upper(),
                        end_state=end,
                        exit_code=code if code != "-" else None,
                        reason=(
                            "the process vanished without an exit status (host rebooted or"
                            " the wrapper was killed)"
                            if end is EndState.UNKNOWN
                            else None
                        ),
                        node=host,
                    )
                )
        return jobs

    def cancel_snippet(self, scheduler_ids: Sequence[str]) -> str:
        ids = " ".join(shell.scheduler_id(i) for i in dict.fromkeys(scheduler_ids))
        # Only our wrappers (named relaymd-*): a reused pid must never be signalled.
        return "\n".join(
            [
                "rc=0",
                f"for p in {ids}; do",
                '  if ps -ww -o args= -p "$p" 2>/dev/null | grep -q " relaymd-"; then',
                '    kill -TERM "$p" || rc=1',
                "  fi",
                "done",
                "exit $rc",
            ]
        )
