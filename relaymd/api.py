"""The Python API: what `relaymd submit`, `relaymd jobs ...` do, callable from a notebook.

Every method runs the CLI's own code (relaymd.submission, the `jobs` commands, relaymd.cli.download)
against the same config, state database and storage, so a job submitted here shows up in
`relaymd jobs list` and the running daemon relays it. Results are pydantic models.

    from relaymd import Client, prepare_openmm_job
    job_dir = prepare_openmm_job(simulation, "my-job", steps=5_000_000)
    client = Client()
    job = client.submit(job_dir)
    client.wait(job.id)               # needs a daemon: `relaymd daemon start`
    result = client.download(job.id, "results", assemble=True)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from relaymd.models import Job, Segment

if TYPE_CHECKING:
    from relaymd.cli.download import DownloadResult
    from relaymd.config import LoadedConfig
    from relaymd.models import JobSpec, JobState
    from relaymd.state import StateStore
    from relaymd.storage.base import ObjectStore


class RelayMDError(Exception):
    """An error the caller can act on; `hint` says what to do (as the CLI's `hint:` line)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(f"{message} ({hint})" if hint else message)
        self.message = message
        self.hint = hint


class JobHistory(BaseModel):
    """A job and its segments (allocations), as `relaymd jobs history` shows them."""

    job: Job
    segments: list[Segment]


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """The CLI's user errors (CliError, SubmitError) as RelayMDError, never a SystemExit."""
    from relaymd.cli.errors import CliError
    from relaymd.submission.errors import SubmitError

    try:
        yield
    except CliError as exc:
        raise RelayMDError(exc.message, exc.hint) from None
    except SubmitError as exc:
        raise RelayMDError(str(exc)) from None


class Client:
    """One operator's RelayMD: config, state database and storage.

    `config`: a config file (default: $RELAYMD_CONFIG, then the user's config folder, then the
    embedded local default). `state_dir` / `data_dir` set RELAYMD_STATE_DIR / RELAYMD_DATA_DIR
    for this process, as the CLI's environment variables do (e.g. to reach the demo's state).
    """

    def __init__(
        self,
        config: str | Path | None = None,
        *,
        state_dir: str | Path | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        if state_dir is not None:
            os.environ["RELAYMD_STATE_DIR"] = str(Path(state_dir).expanduser().resolve())
        if data_dir is not None:
            os.environ["RELAYMD_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())
        from relaymd.config import ConfigError, load_config

        try:
            self.loaded: LoadedConfig = load_config(config)
        except ConfigError as exc:
            raise RelayMDError(
                str(exc), "fix the file; `relaymd config validate` checks it"
            ) from None
        self._state: StateStore | None = None
        self._store: ObjectStore | None = None

    @property
    def state(self) -> StateStore:
        if self._state is None:
            from relaymd.cli import context

            with _errors():
                self._state = context.open_state(self.loaded)
        return self._state

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            from relaymd.cli.storage import open_object_store

            self._store = open_object_store(self.loaded)
        return self._store

    @contextlib.contextmanager
    def _as_cli(self) -> Iterator[None]:
        """Run a `relaymd jobs` command with this client's config, then restore the CLI's."""
        from relaymd.cli import context

        saved = context._loaded
        context.set_loaded(self.loaded)
        try:
            with _errors():
                yield
        finally:
            context._loaded = saved

    # -- submitting ------------------------------------------------------------------------
    def submit(self, job: str | Path | JobSpec, *, directory: str | Path | None = None) -> Job:
        """Submit a job directory (with its relaymd.yaml), or a JobSpec for `directory`
        (its files are the inputs; none for a JobSpec alone). Validated, uploaded and read back
        exactly as `relaymd submit` does."""
        from relaymd.models import JobSpec
        from relaymd.submission.submit import submit_directory

        if isinstance(job, JobSpec):
            if directory is None:
                import tempfile

                with tempfile.TemporaryDirectory(prefix="relaymd-empty-") as empty:
                    return self._submit(Path(empty), job)
            return self._submit(Path(directory), job)
        with _errors():
            return submit_directory(
                Path(job).expanduser(), loaded=self.loaded, store=self.store, state=self.state
            )

    def _submit(self, directory: Path, spec: JobSpec) -> Job:
        from relaymd.submission.submit import submit_directory

        with _errors():
            return submit_directory(
                directory.expanduser(),
                loaded=self.loaded,
                store=self.store,
                state=self.state,
                spec=spec,
            )

    # -- looking -----------------------------------------------------------------------------
    def jobs(
        self, state: str | JobState | list[str | JobState] | None = None, limit: int | None = None
    ) -> list[Job]:
        """Jobs in scheduling order, optionally only those in `state` (one or a list)."""
        from relaymd.models import JobState

        wanted = None
        if state is not None:
            items = state if isinstance(state, list) else [state]
            try:
                wanted = [JobState(s) for s in items]
            except ValueError as exc:
                raise RelayMDError(
                    str(exc), f"one of: {', '.join(s.value for s in JobState)}"
                ) from None
        return self.state.list_jobs(wanted, limit)

    def job(self, job_id: str) -> Job:
        """A job by id or unique prefix."""
        from relaymd.cli import context

        with _errors():
            return context.find_job(self.state, job_id)

    def history(self, job_id: str) -> JobHistory:
        job = self.job(job_id)
        return JobHistory(job=job, segments=self.state.list_segments(job.id))

    def wait(self, job_id: str, timeout: float | None = None, poll_s: float = 5.0) -> Job:
        """Block until the job is completed, failed or cancelled (a daemon must be running:
        `relaymd daemon start`); RelayMDError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.state.is_final:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise RelayMDError(
                    f"job {job.id} is still {job.state} after {timeout:g} s",
                    "is the daemon running? `relaymd status`",
                )
            time.sleep(poll_s)

    # -- acting: the `relaymd jobs` commands themselves ----------------------------------------
    def _act(self, command: Callable[[str], None], job_id: str) -> Job:
        job = self.job(job_id)
        with self._as_cli():
            command(job.id)
        return self.job(job.id)

    def cancel(self, job_id: str) -> Job:
        from relaymd.cli.cmd_jobs import cancel

        return self._act(cancel, job_id)

    def requeue(self, job_id: str) -> Job:
        from relaymd.cli.cmd_jobs import requeue

        return self._act(requeue, job_id)

    def hold(self, job_id: str) -> Job:
        from relaymd.cli.cmd_jobs import hold

        return self._act(hold, job_id)

    def release(self, job_id: str) -> Job:
        from relaymd.cli.cmd_jobs import release

        return self._act(release, job_id)

    # -- results -----------------------------------------------------------------------------
    def download(
        self,
        job_id: str,
        dest: str | Path | None = None,
        *,
        outputs: bool = True,
        checkpoint: bool = True,
        assemble: bool = False,
        xtc: bool = False,
        progress: bool = False,
    ) -> DownloadResult:
        """Fetch outputs and the latest checkpoint into `dest` (default ./<job id>), verifying
        every sha256; files already there with the right sha256 are kept. `assemble` joins the
        chunks into dest/assembled/ (trajectory.dcd, state_data.csv, topology.pdb)."""
        from relaymd.cli.download import download_job

        job = self.job(job_id)
        with _errors():
            return download_job(
                job,
                self.store,
                Path(dest).expanduser() if dest is not None else Path(job.id),
                outputs=outputs,
                checkpoint=checkpoint,
                show_progress=progress,
                assemble=assemble or xtc,
                xtc=xtc,
            )

    def close(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None
