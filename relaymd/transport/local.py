"""Commands on this machine: `bash -s` as an asyncio subprocess (the embedded `local` cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Mapping

from relaymd.models import ClusterProfile
from relaymd.transport.base import (
    CommandResult,
    RemoteTimeout,
    Transport,
    TransportError,
    whole_or_nothing,
)

# Variables that may hold credentials (storage keys, the Infisical client secret, tokens).
# Scripts, and the workers and sbatch jobs they start, never see them: storage credentials
# reach a worker only through the 0600 credentials file of its allocation folder.
_SECRET_NAME = re.compile(
    r"SECRET|TOKEN|PASSW|CREDENTIAL|PRIVATE|(^|_)KEY(_|$)|^INFISICAL_|^AWS_|^B2_", re.IGNORECASE
)


def scrubbed_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The daemon's environment minus anything that looks like a secret."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not _SECRET_NAME.search(k)}


class LocalTransport(Transport):
    def __init__(self, profile: ClusterProfile) -> None:
        self.cluster = profile.name
        self.default_timeout = profile.command_timeout_s
        self._slots = asyncio.Semaphore(profile.max_channels)

    async def run(self, script: str, *, timeout: float | None = None) -> CommandResult:  # noqa: ASYNC109
        limit = self.default_timeout if timeout is None else timeout
        self.round_trips += 1
        async with self._slots:
            try:
                proc = await asyncio.create_subprocess_exec(
                    "bash",
                    "-s",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    # Own process group, so a timeout kills the whole script, not just bash.
                    start_new_session=True,
                    env=self.environment(),
                )
            except OSError as exc:
                raise TransportError(
                    f"{self.cluster}: cannot start bash on this machine: {exc}",
                    cluster=self.cluster,
                ) from exc
            try:
                script_bytes = whole_or_nothing(script).encode()
                out, err = await asyncio.wait_for(proc.communicate(script_bytes), limit)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await proc.wait()
                raise RemoteTimeout(
                    f"{self.cluster}: local command ran past its {limit:g} s timeout and was"
                    " killed; raise `command_timeout_s` in the cluster profile if this repeats",
                    cluster=self.cluster,
                ) from None
        code = proc.returncode if proc.returncode is not None else -1
        return CommandResult(
            # A signal death reads like it does in a shell: 128 + signal number.
            exit_status=128 - code if code < 0 else code,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
        )

    def environment(self) -> dict[str, str]:
        """What each script runs with: the daemon's environment, secrets removed."""
        return scrubbed_environment()

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None
