"""The checks of `relaymd clusters test`: one remote script, one line of result per check.

The script runs on the login node (or locally) through the cluster's transport in a single
round trip. Each check prints `RELAYMD-CHECK <name> <ok|fail> <detail>`; the hints say what to
fix when one fails. Each check runs as what it predicts does: SLURM's commands and the scratch
folder as the daemon's login-node scripts use them (without `setup:`), apptainer and the images
after `setup:`, as the job script runs them.
"""

from __future__ import annotations

import shlex

from pydantic import BaseModel

from relaymd.mailbox.shell import shell_path
from relaymd.models import ClusterProfile

MARK = "RELAYMD-CHECK"

HINTS = {
    "sbatch": "sbatch is not on PATH in a non-interactive SSH shell on the login node (the "
    "daemon does not run `setup:` there); set PATH in ~/.bashrc above any interactive-only "
    "`return`, or ask your site",
    "squeue": "squeue is not on PATH in a non-interactive SSH shell on the login node; see "
    "the sbatch hint",
    "sacct": "sacct is missing or accounting is off; ended jobs are then classified from "
    "worker events only",
    "scratch": "the scratch folder is not writable; set `scratch:` to a folder you own on "
    "shared storage",
    "apptainer": "apptainer not found; set `apptainer:` to its path or add "
    "`module load apptainer` to `setup:`",
    "image": "the worker image is missing; copy the .sif there (docs/hpc-notes.md) "
    "or fix `images:`",
    "native_worker": "the native worker command is not executable; fix `native_worker:`",
    "storage": "the object store is unreachable from this workstation; check `storage:` "
    "and the credentials",
}


class CheckResult(BaseModel):
    name: str
    ok: bool
    detail: str = ""
    hint: str | None = None


def build_check_script(profile: ClusterProfile) -> str:
    lines = ["set +e"]

    def check(name: str, test: str, detail_ok: str, detail_fail: str) -> None:
        label = shlex.quote(name)
        lines.append(
            f"if {test}; then echo {MARK} {label} ok {detail_ok}; "
            f"else echo {MARK} {label} fail {detail_fail}; fi"
        )

    if profile.scheduler == "slurm":
        for tool in ("sbatch", "squeue"):
            check(
                tool,
                f"command -v {tool} >/dev/null 2>&1",
                f'"$(command -v {tool})"',
                '"not on PATH"',
            )
        check("sacct", "sacct -n -X -S now >/dev/null 2>&1", '"works"', '"failed or not on PATH"')
    # Profile values are quoted everywhere (a leading ~ or $VAR still expands, as in job
    # scripts), so `clusters test` cannot be used to inject commands either.
    scratch = shell_path(profile.scratch)
    probe = f"{scratch}/.relaymd-probe-$$"
    check(
        "scratch",
        f"mkdir -p {scratch} && touch {probe} && rm -f {probe}",
        scratch,
        shlex.quote(f"cannot write in {profile.scratch}"),
    )
    # From here on, what the job script runs after `setup:` (its failures are not fatal there
    # either: the job script has no `set -e`).
    lines.extend(profile.setup)
    if profile.native_worker:
        exe = shell_path(profile.native_worker[0])
        check(
            "native_worker",
            f"command -v {exe} >/dev/null 2>&1",
            exe,
            shlex.quote(f"{profile.native_worker[0]} not executable"),
        )
    else:
        app = shlex.quote(profile.apptainer)
        check(
            "apptainer",
            f"command -v {app} >/dev/null 2>&1",
            f'"$({app} --version 2>/dev/null)"',
            '"not found"',
        )
        for name, location in sorted(profile.images.items()):
            if location.sif:
                sif = shell_path(location.sif)
                check(
                    f"image:{name}",
                    f"test -r {sif}",
                    sif,
                    shlex.quote(f"{location.sif} not readable"),
                )
    return "\n".join(lines) + "\n"


def parse_check_output(stdout: str) -> list[CheckResult]:
    results = []
    for line in stdout.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) < 3 or parts[0] != MARK:
            continue
        name, verdict = parts[1], parts[2]
        ok = verdict == "ok"
        base = name.split(":", 1)[0]
        results.append(
            CheckResult(
                name=name,
                ok=ok,
                detail=parts[3] if len(parts) > 3 else "",
                hint=None if ok else HINTS.get(base),
            )
        )
    return results
