"""relaymd-worker: runs relay segments inside an allocation (see worker_entry.cli)."""
