"""The at-most-one batched write to a cluster per cycle (invariant 6).

One bash script creates allocation folders (0700), writes job scripts, the 0600 `credentials`
file and the mailbox files (assignment.json, control.json) atomically (temp + fsync + rename;
payloads base64 inside the script, so no content is ever interpreted by the shell), then runs
the scheduler's submit snippets and one cancel snippet, and prints results between markers.
The script travels on the transport's stdin: credentials never appear in argv, the job script,
the sbatch environment or a log (this module never logs a script).
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from pydantic import BaseModel, Field

from relaymd.scheduler.base import alloc_root
from relaymd.scheduler.shell import shell_path


class FileWrite(BaseModel):
    allocation_id: str
    name: str  # a file name inside the allocation folder
    data: bytes
    mode: int = 0o600


class FileRemoval(BaseModel):
    allocation_id: str
    name: str  # e.g. the credentials of an ended allocation, a withdrawn assignment.json


class SubmitCommand(BaseModel):
    allocation_id: str
    snippet: str  # the scheduler's submit snippet for <folder>/job.sh


class WritePlan(BaseModel):
    mkdirs: list[str] = Field(default_factory=list)  # allocation ids
    files: list[FileWrite] = Field(default_factory=list)
    removals: list[FileRemoval] = Field(default_factory=list)
    submits: list[SubmitCommand] = Field(default_factory=list)
    cancel_snippet: str | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.mkdirs or self.files or self.removals or self.submits or self.cancel_snippet
        )


class WriteResult(BaseModel):
    complete: bool  # the script ran to its end marker
    failed_files: list[tuple[str, str]] = Field(default_factory=list)  # (allocation, name)
    failed_dirs: list[str] = Field(default_factory=list)
    # allocation id -> relaymd.scheduler.SubmitResult
    submits: dict[str, Any] = Field(default_factory=dict)
    submit_output: str = ""
    cancel_rc: int | None = None
    cancel_output: str = ""


_SAFE_NAME = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def _check_name(value: str, what: str) -> None:
    if not value or not set(value.lower()) <= _SAFE_NAME or value.startswith("."):
        raise ValueError(f"unsafe {what} {value!r}")


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
        _check_name(alloc_id, "allocation id")
        lines.append(
            f'mkdir -p -m 700 "$R/{alloc_id}" && chmod 700 "$R/{alloc_id}" '
            f'|| {{ ok_fail="$ok_fail {alloc_id}"; printf \'@@%s D %s fail\\n\' "$T" {alloc_id}; }}'
        )
    for item in plan.files:
        _check_name(item.allocation_id, "allocation id")
        _check_name(item.name, "file name")
        payload = base64.b64encode(item.data).decode()
        lines.append(f"w {item.allocation_id} {item.name} {item.mode:o} {payload}")
    for removal in plan.removals:
        _check_name(removal.allocation_id, "allocation id")
        _check_name(removal.name, "file name")
        lines.append(f'rm -f "$R/{removal.allocation_id}/{removal.name}"')
    lines.append("printf '@@%s SUBMIT\\n' \"$T\"")
    for sub in plan.submits:
        _check_name(sub.allocation_id, "allocation id")
        # Never submit for an allocation whose folder or files could not be written.
        lines.append(f'case " $ok_fail " in *" {sub.allocation_id} "*) ;; *)')
        lines.append(f"( {sub.snippet}\n) </dev/null 2>&1")
        lines.append(";; esac")
    if plan.cancel_snippet:
        lines.append("printf '\\n@@%s CANCEL\\n' \"$T\"")
        lines.append(f"( {plan.cancel_snippet}\n) </dev/null 2>&1")
        lines.append('printf \'\\n@@%s CANCEL_RC %s\\n\' "$T" "$?"')
    lines.append("printf '\\n@@%s END\\n' \"$T\"")
    return "\n".join(lines) + "\n", token


def parse_write_output(stdout: str, token: str, plan: WritePlan, parse_submit: Any) -> WriteResult:
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
