"""The asyncssh client object: 2FA prompts on the terminal, or NeedsAuth when nobody is there,
with the message that says how to authenticate."""

from __future__ import annotations

import asyncio
import getpass
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import asyncssh

from relaymd.transport.base import NeedsAuth

# (prompt text, echo) -> the answer. Injectable so tests can answer prompts.
Prompter = Callable[[str, bool], str]
# The one terminal every cluster's prompts share (held by the prompting thread).
_TERMINAL = threading.Lock()


class ClientFactory(Protocol):
    """A RelayClient for one connection, told what to do when that connection is lost."""

    def __call__(self, *, on_lost: Callable[[RelayClient], None]) -> RelayClient: ...


def terminal_prompter(prompt: str, echo: bool) -> str:
    if echo:
        sys.stderr.write(prompt)
        sys.stderr.flush()
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


class RelayClient(asyncssh.SSHClient):
    """Answers keyboard-interactive/password prompts only when a person runs the daemon."""

    def __init__(
        self,
        cluster: str,
        *,
        interactive: bool,
        prompter: Prompter,
        on_lost: Callable[[RelayClient], None],
    ) -> None:
        self.cluster = cluster
        self.interactive = interactive
        self.prompter = prompter
        self.on_lost = on_lost
        # Set when the server asked for something only a person can give (2FA, password).
        self.wanted_person = False

    def auth_failed(self, detail: str) -> NeedsAuth:
        """The server refused us: a person is needed (prompt nobody answers) or the key is wrong."""
        if self.wanted_person and not self.interactive:
            message = (
                f"cluster {self.cluster}: the login node asks for a password or 2FA code"
                f" ({detail}); run `relaymd daemon run` in a terminal to answer it, or use a"
                " key the cluster accepts without a prompt. Jobs are kept; the cluster is"
                " marked needs-auth"
            )
        else:
            message = (
                f"cluster {self.cluster}: SSH authentication failed ({detail}); check"
                " `ssh.username`/`ssh.identity_file` in the profile or ~/.ssh/config, and that"
                " your key is loaded in ssh-agent (`ssh-add -l`)"
            )
        return NeedsAuth(message, cluster=self.cluster)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(self)

    def auth_banner_received(self, msg: str, lang: str) -> None:
        if self.interactive:
            sys.stderr.write(msg)

    def kbdint_auth_requested(self) -> str | None:
        self.wanted_person = True
        return "" if self.interactive else None

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        if not self.interactive:
            self.wanted_person = True
            return None
        if not prompts:  # an instructions-only round
            if instructions:
                sys.stderr.write(f"{self.cluster}: {instructions}\n")
            return []
        header = f"{self.cluster}: {name}\n{instructions}\n".strip()
        return await asyncio.to_thread(self._ask, header, list(prompts))

    async def password_auth_requested(self) -> str | None:
        self.wanted_person = True
        if not self.interactive:
            return None
        [answer] = await asyncio.to_thread(self._ask, "", [("password: ", False)])
        return answer

    def _ask(self, header: str, prompts: list[tuple[str, bool]]) -> list[str]:
        """One challenge on the terminal, whole: clusters connect at once, and a second
        cluster's prompt between these would take the code typed for this one."""
        with _TERMINAL:
            if header:
                sys.stderr.write(header + "\n")
            return [self.prompter(f"[{self.cluster}] {text}", echo) for text, echo in prompts]


def unusable_key(cluster: str, exc: asyncssh.KeyImportError) -> NeedsAuth:
    return NeedsAuth(
        f"cluster {cluster}: cannot use the SSH key ({exc}); if it is encrypted,"
        " load it with `ssh-add <key>` and remove `ssh.identity_file` from the cluster"
        " profile (an explicit key file is read directly, never through ssh-agent;"
        " without it the daemon uses $SSH_AUTH_SOCK), or point `ssh.identity_file` at"
        " an unencrypted key",
        cluster=cluster,
    )
