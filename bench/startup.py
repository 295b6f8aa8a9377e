"""Start-up time of the `relaymd` CLI: source install vs. the PyInstaller binaries.

    .venv/bin/python -m bench.startup [--runs 15] [--jobs 3000] [--no-write]

Runs each command repeatedly (after warm-up runs, hyperfine-style) with an isolated XDG/state
dir, reports the median, min and max wall time, and for the source install which heavy
modules the command imports (from `python -X importtime`). `status` runs twice: on an empty
state dir and on a database holding `--jobs` jobs (filled by bench/status_scale.py's `fill`).
Writes a markdown table into docs/benchmarks.md between `<!-- bench:startup -->` and
`<!-- /bench:startup -->`.
Binaries that are not built (packaging/build-binary.sh [--onedir]) are left out.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from bench import _docs
from bench.status_scale import fill

ROOT = Path(__file__).resolve().parents[1]
HEADING = "CLI start-up"  # above the markers when the section is appended
HEAVY = (
    "openmm", "numpy", "boto3", "botocore", "asyncssh", "cryptography", "jinja2",
    "aiosqlite", "infisical_sdk", "requests", "typer", "click", "rich", "pydantic", "yaml",
)  # fmt: skip
TARGETS_S = {("source", "--version"): 0.2, ("binary (onefile)", "status"): 0.5}


class Measurement(BaseModel):
    variant: str
    command: str
    state: str  # "empty" or "<n> jobs"
    runs: int
    median_s: float
    min_s: float
    max_s: float
    heavy_modules: list[str] | None = None  # source install only
    target_s: float | None = None


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYMD_")}
    for var in ("CONFIG", "DATA", "STATE", "CACHE"):
        env[f"XDG_{var}_HOME"] = str(home / var.lower())
    env["RELAYMD_STATE_DIR"] = str(home / "state" / "relaymd")
    return env


def time_command(argv: list[str], env: dict[str, str], runs: int, warmup: int) -> list[float]:
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        result = subprocess.run(argv, env=env, capture_output=True, timeout=120)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(
                f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr.decode()}"
            )
        if i >= warmup:
            times.append(elapsed)
    return times


def heavy_imports(argv: list[str], env: dict[str, str]) -> list[str]:
    """Top-level packages from HEAVY that the command imports (source install only)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True
    )
    loaded = {
        line.split("|")[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return [m for m in HEAVY if m in loaded]


def variants() -> list[tuple[str, list[str], list[str] | None]]:
    """(name, argv prefix, argv prefix for -X importtime or None)."""
    found: list[tuple[str, list[str], list[str] | None]] = []
    script = Path(sys.executable).parent / "relaymd"
    if script.exists():
        found.append(("source", [str(script)], [str(script)]))
    for name, path in (
        ("binary (onefile)", ROOT / "dist" / "relaymd"),
        ("binary (onedir)", ROOT / "dist" / "relaymd-onedir" / "relaymd"),
    ):
        if path.exists():
            found.append((name, [str(path)], None))
    return found


def measure(runs: int, warmup: int, jobs: int) -> list[Measurement]:
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="relaymd-bench-") as empty,
        tempfile.TemporaryDirectory(prefix="relaymd-bench-") as full,
    ):
        envs = {"empty": _env(Path(empty)), f"{jobs} jobs": _env(Path(full))}
        filled = Path(envs[f"{jobs} jobs"]["RELAYMD_STATE_DIR"]) / "state.sqlite"
        filled.parent.mkdir(parents=True)
        fill(filled, jobs, random.Random(7))
        cases = [("--version", "empty"), ("status", "empty"), ("status", f"{jobs} jobs")]
        for variant, prefix, traced in variants():
            for command, state in cases:
                env = envs[state]
                argv = [*prefix, *command.split()]
                times = time_command(argv, env, runs, warmup)
                results.append(
                    Measurement(
                        variant=variant,
                        command=command,
                        state=state,
                        runs=runs,
                        median_s=statistics.median(times),
                        min_s=min(times),
                        max_s=max(times),
                        heavy_modules=heavy_imports([*traced, *command.split()], env)
                        if traced
                        else None,
                        target_s=TARGETS_S.get((variant, command)),
                    )
                )
    return results


def render(results: list[Measurement], runs: int) -> str:
    size = ""
    onefile = ROOT / "dist" / "relaymd"
    if onefile.exists():
        size = f" Onefile binary: {onefile.stat().st_size / 2**20:.1f} MiB."
    lines = [
        f"`relaymd` start-up, median of {runs} runs after warm-up, isolated state dir "
        f"(bench/startup.py). Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs.{size}",
        "",
        "| variant | command | state | median | min | max | target | heavy modules imported |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        target = (
            ""
            if r.target_s is None
            else f"< {r.target_s:g} s " + ("✅" if r.median_s < r.target_s else "❌")
        )
        heavy = "n/a" if r.heavy_modules is None else (", ".join(r.heavy_modules) or "none")
        lines.append(
            f"| {r.variant} | `relaymd {r.command}` | {r.state} | {r.median_s * 1000:.0f} ms | "
            f"{r.min_s * 1000:.0f} ms | {r.max_s * 1000:.0f} ms | {target} | {heavy} |"
        )
    return "\n".join(lines)


def replace_section(document: str, body: str) -> str:
    """Put `body` between the markers, appending the section if the markers are absent.

    (main() writes through `_docs.write_section`; tests/unit/test_distribution.py calls this.)
    """
    return _docs.replace_section(document, "startup", body, heading=HEADING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=3000, help="jobs in the filled database")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    table = render(measure(args.runs, args.warmup, args.jobs), args.runs)
    print(table)
    if not args.no_write:
        _docs.write_section("startup", table, heading=HEADING)
        print(f"wrote {_docs.DOCS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
