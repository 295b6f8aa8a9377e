"""The `command` engine: an opaque program (e.g. AToM-OpenMM) that checkpoints to files.

It runs in the work dir where the bundle was extracted and the resume checkpoint's files were
restored in place; resuming means running the same command again. Supervision: checkpoint
sets (ready marker + settle time), progress files (startup and progress timeouts), fatal log
patterns. Stop: SIGTERM to the process group, wait (bounded) for a checkpoint newer than the
stop request, upload it, SIGKILL if still alive.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections import deque
from pathlib import Path, PurePosixPath
from typing import IO

from relaymd.atom_config import AtomConfigError, AtomLayout, load_atom_layout
from relaymd.models import CommandSettings
from worker_entry.engines.base import (
    Engine,
    EngineFailure,
    EngineResult,
    Outcome,
    PendingCheckpoint,
    Restored,
    SegmentHooks,
)
from worker_entry.engines.fileset import CheckpointSetWatcher, count_samples, glob_files
from worker_entry.engines.output_cut import OutputCut, apply_cuts, atom_round, counted_cuts
from worker_entry.logging import get_logger
from worker_entry.stopping import StopRequest

log = get_logger(__name__)

POLL_S = 0.2
CAPTURED_LOG = "relaymd-command.log"
TAIL_LINES = 50
KILL_WAIT_S = 10.0

# starting_sample: written once when MAX_SAMPLES is "+N"; without it the target moves every hop.
ATOM_CHECKPOINT_GLOBS = ["r*/*_ckpt.xml", "starting_sample"]
ATOM_READY_MARKER = "ckpt_is_valid"
ATOM_PROGRESS_GLOBS = ["r*/*.out"]
ATOM_OUTPUT_GLOBS = ["r*/*.out", "r*/*.xtc", "r*/*.dcd", "*.log"]


def _atom_dir(settings: CommandSettings) -> str:
    """AToM works in its config file's folder: the preset's paths are relative to it."""
    config = settings.atom_config_path()
    parent = PurePosixPath(config).parent.as_posix() if config else "."
    return "" if parent == "." else parent


def apply_preset(settings: CommandSettings) -> CommandSettings:
    """Fill what a preset knows; explicit settings win."""
    if settings.preset != "atom":
        return settings
    here = _atom_dir(settings)

    def under(globs: list[str]) -> list[str]:
        return [PurePosixPath(here, g).as_posix() if here else g for g in globs]

    return settings.model_copy(
        update={
            "checkpoint_globs": settings.checkpoint_globs or under(ATOM_CHECKPOINT_GLOBS),
            "ready_marker": settings.ready_marker or under([ATOM_READY_MARKER])[0],
            "progress_globs": settings.progress_globs or under(ATOM_PROGRESS_GLOBS),
            "output_globs": settings.output_globs or under(ATOM_OUTPUT_GLOBS),
        }
    )


def _tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        with path.open("r", errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except OSError:
        return []


class _LogScanner:
    """Reads a growing log incrementally and reports the first line matching a fatal pattern."""

    def __init__(self, path: Path, patterns: list[re.Pattern[str]]) -> None:
        self.path = path
        self.patterns = patterns
        self._offset = 0
        self._partial = ""

    def scan(self) -> str | None:
        if not self.patterns:
            return None
        try:
            with self.path.open("r", errors="replace") as fh:
                fh.seek(self._offset)
                data = fh.read()
                self._offset = fh.tell()
        except OSError:
            return None
        text = self._partial + data
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            if any(p.search(line) for p in self.patterns):
                return line
        return None


class CommandEngine(Engine):
    name = "command"

    def __init__(self, settings: CommandSettings) -> None:
        self.settings = apply_preset(settings)
        self.total_steps = self.settings.target_samples
        self.work_dir = Path()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self.platform: str | None = None
        self._atom: AtomLayout | None = None
        self._checkpoint_step = 0  # progress of the newest checkpoint set (restored or captured)
        try:
            self._patterns = [re.compile(p) for p in self.settings.fatal_log_patterns]
        except re.error as exc:
            raise EngineFailure(f"engine.fatal_log_patterns: invalid regex: {exc}") from None
        if not self.settings.checkpoint_globs:
            raise EngineFailure("engine.checkpoint_globs is empty: nothing could be resumed")

    def prepare(self, work_dir: Path, restored: Restored | None, platform: str | None) -> None:
        self.work_dir = work_dir
        self.platform = platform
        exe = self.settings.command[0]
        if "/" in exe and not (work_dir / exe).exists() and not Path(exe).exists():
            raise EngineFailure(f"engine.command: {exe} is neither in the bundle nor on this node")
        if "/" not in exe and shutil.which(exe) is None:
            raise EngineFailure(f"engine.command: {exe} is not on PATH on this node")
        self._atom = self._load_atom_layout()
        if restored is not None:
            for item in restored.manifest.files:
                source = restored.directory / item.path
                target = work_dir / item.path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
            self.start_step = restored.manifest.step
            self.resumed_from = "checkpoint"
            # The program appends to these files and never cuts them back: before it resumes,
            # they must hold exactly the lines of the round it resumes from.
            cuts, _ = self._cuts(work_dir)
            apply_cuts(work_dir, cuts, "restored checkpoint")
        self._checkpoint_step = self.start_step
        self.watcher = CheckpointSetWatcher(
            work_dir,
            self.settings.checkpoint_globs,
            self.settings.progress_globs,
            self.settings.ready_marker,
            self.settings.settle_s,
        )
        self.watcher.mark_current_captured()

    def _load_atom_layout(self) -> AtomLayout | None:
        config = self.settings.atom_config_path()
        if self.settings.preset != "atom":
            return None
        if config is None:
            raise EngineFailure(
                "preset atom: no AToM config file in engine.command (an argument ending in "
                ".cntl, .yaml, .yml or .json) and no engine.atom_config"
            )
        try:
            return load_atom_layout(self.work_dir / config)
        except AtomConfigError as exc:
            raise EngineFailure(f"engine.atom_config: {exc}") from None

    def _cuts(self, root: Path) -> tuple[list[OutputCut], int | None]:
        """(cuts, samples) for the checkpoint set under `root`; samples None when the set does
        not say (generic command: counted from the cut progress files instead)."""
        if self._atom is not None:
            found = atom_round(root, _atom_dir(self.settings), self._atom)
            return found.cuts, found.samples
        if self.settings.output_line_counts:
            return counted_cuts(root, self.settings.output_line_counts), None
        return [], None

    # -- process control -----------------------------------------------------------------
    def _start(self) -> None:
        env = dict(os.environ)
        env["RELAYMD_RESUMED"] = "1" if self.resumed_from == "checkpoint" else "0"
        env["RELAYMD_START_STEP"] = str(self.start_step)
        if self.platform:
            env["RELAYMD_PLATFORM"] = self.platform
        self._log_handle = (self.work_dir / CAPTURED_LOG).open("ab")
        try:
            self.proc = subprocess.Popen(
                self.settings.command,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: signals reach every child
            )
        except OSError as exc:
            raise EngineFailure(f"cannot start {self.settings.command[0]}: {exc}") from None
        log.info("command_started", pid=self.proc.pid, command=self.settings.command)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def _kill(self) -> None:
        self._signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()

    def _log_path(self) -> Path:
        if self.settings.log_file and (self.work_dir / self.settings.log_file).is_file():
            return self.work_dir / self.settings.log_file
        return self.work_dir / CAPTURED_LOG

    def log_tail(self) -> list[str]:
        return _tail(self._log_path())

    # -- checkpoints ---------------------------------------------------------------------
    def _samples(self) -> int:
        """Progress of the newest checkpoint set: what a resume would start from."""
        return self._checkpoint_step

    def _capture_outputs(self, directory: Path, copied: list[tuple[str, Path]]) -> int:
        """Cut the outputs copied with a checkpoint to the lines it owns; its progress."""
        cuts, samples = self._cuts(directory)
        have = {rel for rel, _ in copied}
        for cut in cuts:
            live = self.work_dir / cut.path
            if cut.path not in have and live.is_file():
                # Named by the round but not carried: any later copy holds the round's lines.
                target = directory / cut.path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(live, target)
                copied.append((cut.path, target))
        apply_cuts(directory, cuts, "checkpoint")
        if samples is not None:
            return samples
        if not self.settings.progress_globs:
            return self._checkpoint_step
        return count_samples(directory, self.settings.progress_globs) or 0

    def _try_capture(
        self, hooks: SegmentHooks, newer_than: float | None = None, settled: bool = False
    ) -> bool:
        files = self.watcher.ready(newer_than=newer_than, settled=settled)
        if files is None:
            return False
        started = time.monotonic()
        seq, directory = hooks.new_checkpoint_dir()
        copied = self.watcher.capture(files, directory)
        if copied is None:
            shutil.rmtree(directory, ignore_errors=True)
            return False
        step = self._capture_outputs(directory, copied)
        self._checkpoint_step = step
        hooks.submit_checkpoint(
            PendingCheckpoint(
                seq=seq,
                step=step,
                files=copied,
                local_dir=directory,
                platform=self.platform,
                save_s=time.monotonic() - started,
            )
        )
        return True

    # -- the run -------------------------------------------------------------------------
    def run(self, hooks: SegmentHooks, checkpoint_interval_s: float) -> EngineResult:
        s = self.settings
        stop = hooks.check_stop()
        if stop is not None:
            return EngineResult(outcome=Outcome.STOPPED, step=self.start_step, stop=stop)
        self._start()
        assert self.proc is not None
        started = time.monotonic()
        scanners = [_LogScanner(self.work_dir / CAPTURED_LOG, self._patterns)]
        if s.log_file:
            scanners.append(_LogScanner(self.work_dir / s.log_file, self._patterns))
        last_samples: int | None = None
        last_progress_at = started
        while True:
            rc = self.proc.poll()
            samples = count_samples(self.work_dir, s.progress_globs) if s.progress_globs else None
            now = time.monotonic()
            if samples is not None and samples != last_samples:
                last_samples, last_progress_at = samples, now
            hooks.report_progress(
                samples if samples is not None else self.start_step, s.target_samples
            )
            if rc is not None:
                return self._exited(hooks, rc)
            self._try_capture(hooks)
            for scanner in scanners:
                line = scanner.scan()
                if line is not None:
                    self._kill()
                    self._try_capture(hooks, settled=True)
                    raise EngineFailure(
                        f"fatal pattern in {scanner.path.name}: {line.strip()}",
                        log_tail=self.log_tail(),
                    )
            if s.progress_globs and last_samples is None and now - started > s.startup_timeout_s:
                self._kill()
                raise EngineFailure(
                    f"no progress file matching {s.progress_globs} within "
                    f"{s.startup_timeout_s:g}s of start",
                    log_tail=self.log_tail(),
                )
            if last_samples is not None and now - last_progress_at > s.progress_timeout_s:
                self._kill()
                self._try_capture(hooks, settled=True)
                raise EngineFailure(
                    f"no progress for {s.progress_timeout_s:g}s (stuck at {last_samples} samples)",
                    log_tail=self.log_tail(),
                )
            stop = hooks.check_stop()
            if stop is not None:
                return self._stop(hooks, stop)
            time.sleep(POLL_S)

    def _stop(self, hooks: SegmentHooks, stop: StopRequest) -> EngineResult:
        assert self.proc is not None
        grace = self.settings.stop_grace_s
        left = hooks.time_left_s()
        if left is not None:
            grace = max(1.0, min(grace, left - 2.0))
        log.info("command_stopping", pid=self.proc.pid, grace_s=grace)
        self._signal(signal.SIGTERM)
        give_up = time.monotonic() + grace
        captured = False
        while time.monotonic() < give_up:
            exited = self.proc.poll() is not None
            if self._try_capture(hooks, newer_than=stop.requested_at, settled=exited):
                captured = True
                break
            if exited:
                break
            time.sleep(POLL_S)
        if not captured:
            log.warning("command_no_checkpoint_after_stop", grace_s=grace)
        self._kill()
        return EngineResult(outcome=Outcome.STOPPED, step=self._samples(), stop=stop)

    def _exited(self, hooks: SegmentHooks, rc: int) -> EngineResult:
        self._try_capture(hooks, settled=True)
        samples = self._samples()
        target = self.settings.target_samples
        if rc != 0:
            raise EngineFailure(
                f"command exited with status {rc} at {samples} samples", log_tail=self.log_tail()
            )
        if target is not None and samples < target:
            # AToM exits 0 even when every GPU worker crashed: judge by the samples.
            raise EngineFailure(
                f"command exited 0 with {samples} of {target} samples; not complete",
                log_tail=self.log_tail(),
            )
        return EngineResult(outcome=Outcome.COMPLETED, step=samples)

    def output_files(self) -> list[tuple[str, Path]]:
        files = glob_files(self.work_dir, self.settings.output_globs)
        result = [(p.relative_to(self.work_dir).as_posix(), p) for p in files]
        captured = self.work_dir / CAPTURED_LOG
        if captured.is_file() and captured not in files:
            result.append((CAPTURED_LOG, captured))
        return result

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._kill()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
