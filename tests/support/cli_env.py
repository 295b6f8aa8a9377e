"""An isolated operator running the real `relaymd` console script (the CLI and campaign tests).

Each case runs the console script in a subprocess and judges it from outside: the exit code,
the words of stderr, and what is on disk afterwards (job rows read with sqlite3, objects in
the file:// store), never from RelayMD's own objects.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

RELAYMD = Path(sys.prefix) / "bin" / "relaymd"
REPO = Path(__file__).resolve().parents[2]
# A job spec of 1000 OpenMM steps without a GPU; `.format(title=...)`.
TINY_SPEC = "title: {title}\nengine: {{kind: openmm, total_steps: 1000}}\nresources: {{gpus: 0}}\n"


class CliEnv(BaseModel):
    """One isolated operator: its own config, state and data folders."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    root: Path
    state_dir: Path
    data_dir: Path
    config: Path
    env: dict[str, str]

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def db(self) -> Path:
        return self.state_dir / "state.sqlite"

    def run(
        self,
        *args: str,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        drop_env: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        merged = {**self.env, **(env or {})}
        for name in drop_env:
            merged.pop(name, None)
        return subprocess.run(
            [str(RELAYMD), *args],
            env=merged,
            cwd=self.root,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def local_config(data_dir: Path, partition: str = "") -> str:
    """A config with the local cluster and file:// storage, as a user would write it."""
    return f"""\
storage:
  url: file://{data_dir}/storage
clusters:
  - name: local
    transport: local
    scheduler: direct
    scratch: {data_dir}/scratch
    native_worker: [{sys.executable}, -m, worker_entry]
    partitions:
      - {{name: local, walltime_minutes: 10, gpus_per_allocation: 0{partition}}}
"""


def new_cli(tmp_path: Path) -> CliEnv:
    """An operator whose config, state, data and XDG folders all live under `tmp_path`."""
    state_dir, data_dir = tmp_path / "state", tmp_path / "data"
    config = tmp_path / "config.yaml"
    config.write_text(local_config(data_dir))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RELAYMD_", "XDG_")) and k not in ("COLUMNS", "LINES")
    }
    env.update(
        RELAYMD_STATE_DIR=str(state_dir),
        RELAYMD_DATA_DIR=str(data_dir),
        RELAYMD_CONFIG=str(config),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        COLUMNS="200",
    )
    return CliEnv(root=tmp_path, state_dir=state_dir, data_dir=data_dir, config=config, env=env)


def make_job_dir(root: Path, name: str = "job", spec: str | None = None) -> Path:
    """A job folder with placeholder OpenMM inputs and `spec` (default: 1000 steps, no GPU)."""
    directory = root / name
    directory.mkdir()
    for file in ("system.xml", "state.xml", "integrator.xml"):
        (directory / file).write_text(f"<{file}/>\n")
    (directory / "relaymd.yaml").write_text(spec or TINY_SPEC.format(title="tiny"))
    return directory


def job_rows(cli: CliEnv, db: Path | None = None) -> list[tuple[str, str, int, str | None]]:
    """(id, state, epoch, resume pointer) of every job, read with sqlite3 directly."""
    path = db or cli.db
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id, state, epoch, data FROM jobs ORDER BY id").fetchall()
    return [
        (str(r[0]), str(r[1]), int(r[2]), json.dumps(json.loads(r[3]).get("checkpoint")))
        for r in rows
    ]


def job_count(cli: CliEnv) -> int:
    """How many jobs the state file holds, read with sqlite3 directly (0 without a file)."""
    if not cli.db.exists():
        return 0
    with sqlite3.connect(cli.db) as db:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])


def stored_objects(cli: CliEnv) -> list[Path]:
    """Every object in the file:// store (temporary upload files included)."""
    if not cli.storage_dir.exists():
        return []
    return sorted(p for p in cli.storage_dir.rglob("*") if p.is_file())


def assert_clear_error(done: subprocess.CompletedProcess[str], code: int, *names: str) -> None:
    """Exit `code`, one message naming each of `names`, and never a traceback."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    assert "\\x0a" not in done.stderr, done.stderr  # one problem per line, not one mangled line
    for name in names:
        assert name in done.stderr, (name, done.stderr)
