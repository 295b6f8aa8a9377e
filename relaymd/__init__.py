"""RelayMD: relay long MD simulations across short allocations on several clusters."""

__version__ = "0.1.0"
