"""Views of the relay from the state file only: the queue-aware ETA, the live terminal view
(`status --watch`), the HTML report and timeline image (`relaymd report`) and the local
dashboard. Nothing here talks to a cluster or to the daemon."""
