"""CLI tests run the real `relaymd` console script in subprocesses, isolated in tmp dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

RELAYMD = Path(sys.prefix) / "bin" / "relaymd"
REPO = Path(__file__).resolve().parents[2]


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
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RELAYMD), *args],
            env={**self.env, **(env or {})},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def local_config(data_dir: Path) -> str:
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
      - {{name: local, walltime_minutes: 10, gpus_per_allocation: 0}}
"""


@pytest.fixture
def cli(tmp_path: Path) -> CliEnv:
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
