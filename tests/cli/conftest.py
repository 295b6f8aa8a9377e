"""CLI tests run the real `relaymd` console script in subprocesses, isolated in tmp dirs
(`tests.support.cli_env.CliEnv`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli_env import CliEnv, new_cli


@pytest.fixture
def cli(tmp_path: Path) -> CliEnv:
    return new_cli(tmp_path)
