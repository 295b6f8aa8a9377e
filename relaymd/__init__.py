"""RelayMD: relay long MD simulations across short allocations on several clusters."""

from importlib import metadata

try:
    # One source: the version in pyproject.toml, as installed (the binary ships its metadata).
    __version__ = metadata.version("relaymd")
except metadata.PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"
