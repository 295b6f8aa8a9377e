"""XDG locations of the operator's files (config, state, data, logs)."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_config_path, user_data_path, user_state_path

APP = "relaymd"


def bundled_clusters_dir() -> Path:
    """clusters/ of a source checkout, else the copy packaged as relaymd/_clusters."""
    package = Path(__file__).resolve().parent
    source_tree = package.parent / "clusters"
    if source_tree.is_dir():
        return source_tree
    return package / "_clusters"


def config_file() -> Path:
    env = os.environ.get("RELAYMD_CONFIG")
    return Path(env).expanduser() if env else user_config_path(APP) / "config.yaml"


def state_dir() -> Path:
    env = os.environ.get("RELAYMD_STATE_DIR")
    return Path(env).expanduser() if env else user_state_path(APP)


def data_dir() -> Path:
    env = os.environ.get("RELAYMD_DATA_DIR")
    return Path(env).expanduser() if env else user_data_path(APP)


def state_db() -> Path:
    return state_dir() / "state.sqlite"


def daemon_lock() -> Path:
    return state_dir() / "daemon.lock"


def daemon_log() -> Path:
    return state_dir() / "daemon.log"
