"""How to start RelayMD's own programs from the running one.

In the PyInstaller binary `sys.executable` is the binary itself (no `-m`), and it carries
no OpenMM, so local workers must come from a Python that has the worker installed.
"""

from __future__ import annotations

import shutil
import sys


def frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def relaymd_command() -> list[str]:
    """argv that runs the `relaymd` CLI again (e.g. `daemon start` launching `daemon run`)."""
    return [sys.executable] if frozen() else [sys.executable, "-m", "relaymd.cli"]


def local_worker_command() -> list[str]:
    """argv that starts `relaymd-worker` on this machine (the embedded `local` cluster)."""
    if not frozen():
        return [sys.executable, "-m", "worker_entry"]
    installed = shutil.which("relaymd-worker")
    return [installed] if installed else ["relaymd-worker"]
