"""What a submit raises: a problem with one job directory, or Ctrl-C."""

from __future__ import annotations

from relaymd.storage.base import TransferCancelled


class SubmitError(Exception):
    """A problem with one job directory; the message names the directory/file and field."""

    def __init__(self, message: str, *, kind: str = "invalid") -> None:
        super().__init__(message)
        # "invalid" (usage: fix the spec), "missing" (a path does not exist), "storage".
        self.kind = kind


class SubmitInterrupted(TransferCancelled):
    """Ctrl-C arrived: uploads stopped, their objects were removed, nothing was registered."""
