"""Engines run one segment of a job. Imported lazily: OpenMM is only needed to run one."""

from __future__ import annotations

from relaymd.models import CommandSettings, OpenMMSettings
from worker_entry.engines.base import Engine


def make_engine(settings: OpenMMSettings | CommandSettings) -> Engine:
    if isinstance(settings, OpenMMSettings):
        from worker_entry.engines.openmm_engine import OpenMMEngine

        return OpenMMEngine(settings)
    from worker_entry.engines.command_engine import CommandEngine

    return CommandEngine(settings)
