"""The at-most-one batched write to a cluster per cycle (invariant 6).

One bash script creates allocation folders (0700), writes job scripts, the 0600 `credentials`
file and the mailbox files (assignment.json, control.json) atomically (temp + fsync + rename;
payloads base64 inside the script, so no content is ever interpreted by the shell), then runs
the scheduler's submit snippets and one cancel snippet, and prints results between markers.
The script travels on the transport's stdin: credentials never appear in argv, the job script,
the sbatch environment or a log (this module never logs a script). The scratch carrier's write
(relaymd.mailbox.scratch) runs it.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, Field

from relaymd.mailbox.carrier import MailboxWrites, MailboxWritten
from relaymd.mailbox.layout import alloc_root
from relaymd.mailbox.shell import check_name, shell_path


class SubmitCommand(BaseModel):
    allocation_id: str
    snippet: str  # the scheduler's submit snippet for <folder>/job.sh
    # Every folder whose writes the submit needs besides its own (a GPU group's other slots,
    # ADR 0026): a worker would start there without its mailbox or credentials.
    also_needs: list[str] = Field(default_factory=list)


class WritePlan(MailboxWrites):
    """The mailbox writes plus the scheduler's shell, which rides in the same script."""

    submits: list[SubmitCommand] = Field(default_factory=list)
    cancel_snippet: str | None = None

    @property
    def empty(self) -> bool:
        return super().empty and not (self.submits or self.cancel_snippet)


class WriteResult(MailboxWritten):
    # allocation id -> relaymd.scheduler.SubmitResult
    submits: dict[str, Any] = Field(default_factory=dict)
    submit_output: str = ""
    cancel_rc: int | None = None
    cancel_output: str = ""


def build_write_script(scratch: str, plan: WritePlan, token: str | None = None) -> tuple[str, str]:
    token = token or secrets.token_hex(8)
    lines = [
        "set -u",
        "umask 077",
        f"T={token}",
        f"R={shell_path(alloc_root(scratch))}",
        # w <alloc> <name> <mode> <base64>: atomic write, prints a result marker.
        "w() {",
        '  p="$R/$1/$2"; t="$R/$1/.$2.tmp.$$"',
        '  if printf %s "$4" | base64 -d > "$t" && chmod "$3" "$t" && { sync "$t" 2>/dev/null;'
        ' true; } && mv -f "$t" "$p"; then',
        '    printf \'@@%s W %s %s ok\\n\' "$T" "$1" "$2"',
        "  else",
        '    rm -f "$t"; ok_fail="$ok_fail $1"',
        '    printf \'@@%s W %s %s fail\\n\' "$T" "$1" "$2"',
        "  fi",
        "}",
        'ok_fail=""',
    ]
    for alloc_id in plan.mkdirs:
        check_name(alloc_id, "allocation id")
        lines.append(
            f'mkdir -p -m 700 "$R/{alloc_id}" && chmod 700 "$R/{alloc_id}" '
            f'|| {{ ok_fail="$ok_fail {alloc_id}"; printf \'@@%s D %s fail\\n\' "$T" {alloc_id}; }}'
        )
    for item in plan.files:
        check_name(item.allocation_id, "allocation id")
        check_name(item.name, "file name")
        payload = base64.b64encode(item.data).decode()
        lines.append(f"w {item.allocation_id} {item.name} {item.mode:o} {payload}")
    for removal in plan.removals:
        check_name(removal.allocation_id, "allocation id")
        check_name(removal.name, "file name")
        lines.append(f'rm -f "$R/{removal.allocation_id}/{removal.name}"')
    lines.append("printf '@@%s SUBMIT\\n' \"$T\"")
    for sub in plan.submits:
        folders = [sub.allocation_id, *sub.also_needs]
        for folder in folders:
            check_name(folder, "allocation id")
        # Never submit for an allocation whose folder or files could not be written.
        failed = "|".join(f'*" {folder} "*' for folder in folders)
        lines.append(f'case " $ok_fail " in {failed}) ;; *)')
        lines.append(f"( {sub.snippet}\n) </dev/null 2>&1")
        lines.append(";; esac")
    if plan.cancel_snippet:
        lines.append("printf '\\n@@%s CANCEL\\n' \"$T\"")
        lines.append(f"( {plan.cancel_snippet}\n) </dev/null 2>&1")
        lines.append('printf \'\\n@@%s CANCEL_RC %s\\n\' "$T" "$?"')
    lines.append("printf '\\n@@%s END\\n' \"$T\"")
    return "\n".join(lines) + "\n", token


def parse_write_output(
    stdout: str, token: str, plan: WritePlan, parse_submit: Callable[[str], Iterable[Any]]
) -> WriteResult:
    marker = f"@@{token} "
    result = WriteResult(complete=False)
    section = ""
    submit_lines: list[str] = []
    cancel_lines: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(marker):
            parts = line[len(marker) :].split()
            kind = parts[0] if parts else ""
            if kind == "W" and len(parts) == 4 and parts[3] == "fail":
                result.failed_files.append((parts[1], parts[2]))
            elif kind == "D" and len(parts) == 3:
                result.failed_dirs.append(parts[1])
            elif kind == "CANCEL_RC" and len(parts) == 2:
                result.cancel_rc = int(parts[1]) if parts[1].isdigit() else None
            elif kind == "END":
                result.complete = True
            section = kind
            continue
        if section == "SUBMIT":
            submit_lines.append(line)
        elif section == "CANCEL":
            cancel_lines.append(line)
    result.submit_output = "\n".join(submit_lines)
    result.cancel_output = "\n".join(cancel_lines)
    if plan.submits:
        for sub in parse_submit(result.submit_output):
            if sub.allocation_id:
                result.submits[sub.allocation_id] = sub
    return result
