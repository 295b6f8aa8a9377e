"""`python -m worker_entry` is the same as `relaymd-worker`."""

from worker_entry.cli import main

raise SystemExit(main())
