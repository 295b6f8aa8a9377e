"""RelayMD: relay long MD simulations across short allocations on several clusters.

The Python API (docs/python-api.md) is imported on first use, so `import relaymd` and the CLI's
fast paths stay light:

    from relaymd import Client, prepare_openmm_job
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    # One source: the version in pyproject.toml, as installed (the binary ships its metadata).
    __version__ = metadata.version("relaymd")
except metadata.PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from relaymd.api import Client, JobHistory, RelayMDError
    from relaymd.assemble import AssembledOutputs, assemble_outputs
    from relaymd.openmm_job import prepare_openmm_job

__all__ = [
    "AssembledOutputs",
    "Client",
    "JobHistory",
    "RelayMDError",
    "__version__",
    "assemble_outputs",
    "prepare_openmm_job",
]

_LAZY = {
    "Client": "relaymd.api",
    "JobHistory": "relaymd.api",
    "RelayMDError": "relaymd.api",
    "AssembledOutputs": "relaymd.assemble",
    "assemble_outputs": "relaymd.assemble",
    "prepare_openmm_job": "relaymd.openmm_job",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'relaymd' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
