"""The mailbox protocol: how the daemon and a worker talk, through files only.

One home for the protocol (docs/architecture.md, "The mailbox protocol"; ADR 0018):

- `models`: the wire models (assignment, control, heartbeat, events) and their size limits;
- `layout`: where an allocation's mailbox is and the names of its files;
- `files`: local atomic writes and reads (the worker's side, the local transport);
- `daemon_files`: what the daemon writes into a mailbox, built from committed rows;
- `carrier`: the typed seam between the daemon and a way of reaching mailboxes;
- `reading`: carrier-neutral parsing of what a read brought back (caps, events windows);
- `scratch`, `scratch_read`, `scratch_write`, `login_read_program`, `shell`: the first
  carrier, shared scratch reached by one shell script per read or write over SSH.

Nothing is imported here, so the worker pays only for the modules it uses.
"""
