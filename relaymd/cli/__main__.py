"""`python -m relaymd.cli ...`: how `relaymd daemon start` re-launches itself in the background."""

from relaymd.cli.main import main

main()
