"""The `command` engine: an opaque program (e.g. AToM-OpenMM) that checkpoints to files.

It runs in the work dir where the bundle was extracted and the resume checkpoint's files were
restored in place; resuming means running the same command again. Supervision: checkpoint
sets (ready marker + settle time), progress files (startup and progress timeouts), fatal log
patterns. Stop: SIGTERM to the process group, wait (bounded) for a checkpoint newer than the
stop request, upload it, SIGKILL if still alive.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import NoReturn

from relaymd.models import CommandSettings
from worker_entry.devices import DeviceError, device_count, engine_devices
from worker_entry.engines.atom_nodefile import write_nodefile
from worker_entry.engines.base import (
    Engine,
    EngineFailure,
    EngineResult,
    Outcome,
    Restored,
    SegmentHooks,
)
from worker_entry.engines.command_checkpoints import CommandCheckpoints
from worker_entry.engines.command_log import CAPTURED_LOG, log_tail, scanners
from worker_entry.engines.command_preset import apply_preset, load_preset_layout
from worker_entry.engines.command_process import CommandProcess
from worker_entry.engines.fileset import count_samples, glob_files
from worker_entry.logging import get_logger
from worker_entry.stopping import StopRequest

log = get_logger(__name__)

POLL_S = 0.2


class CommandEngine(Engine):
    name = "command"

    def __init__(self, settings: CommandSettings) -> None:
        self.settings = apply_preset(settings)
        self.total_steps = self.settings.target_samples
        self.work_dir = Path()
        self.proc: CommandProcess | None = None
        self.platform: str | None = None
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
        atom = load_preset_layout(self.settings, work_dir)
        config = self.settings.atom_config_path()
        if atom is not None and config is not None and self.cuda_visible_devices is not None:
            write_nodefile(work_dir / config, device_count(self.cuda_visible_devices), platform)
        self.checkpoints = CommandCheckpoints(self.settings, work_dir, atom, restored, platform)
        if restored is not None:
            self.start_step = self.checkpoints.step
            self.resumed_from = "checkpoint"

    def use_devices(self, slots: list[int]) -> None:
        try:
            self.cuda_visible_devices = engine_devices(slots, os.environ)
        except DeviceError as exc:  # a placement problem, not the job's: requeue it
            raise EngineFailure(str(exc), retryable=True) from None

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.cuda_visible_devices
        env["RELAYMD_RESUMED"] = "1" if self.resumed_from == "checkpoint" else "0"
        env["RELAYMD_START_STEP"] = str(self.start_step)
        if self.platform:
            env["RELAYMD_PLATFORM"] = self.platform
        return env

    def log_tail(self) -> list[str]:
        return log_tail(self.settings, self.work_dir)

    def _fail(
        self, hooks: SegmentHooks, proc: CommandProcess, reason: str, capture: bool
    ) -> NoReturn:
        """Kill the program, keep the checkpoint it may have finished, and fail the job."""
        proc.kill()
        if capture:
            self.checkpoints.try_capture(hooks, settled=True)
        raise EngineFailure(reason, log_tail=self.log_tail())

    # -- the run -------------------------------------------------------------------------
    def run(self, hooks: SegmentHooks, checkpoint_interval_s: float) -> EngineResult:
        s = self.settings
        stop = hooks.check_stop()
        if stop is not None:
            return EngineResult(outcome=Outcome.STOPPED, step=self.start_step, stop=stop)
        proc = self.proc = CommandProcess(s.command, self.work_dir, self._environment())
        started = time.monotonic()
        watched = scanners(s, self.work_dir, self._patterns)
        last_samples: int | None = None
        last_progress_at = started
        while True:
            rc = proc.poll()
            samples = count_samples(self.work_dir, s.progress_globs) if s.progress_globs else None
            now = time.monotonic()
            if samples is not None and samples != last_samples:
                last_samples, last_progress_at = samples, now
            hooks.report_progress(
                samples if samples is not None else self.start_step, s.target_samples
            )
            if rc is not None:
                return self._exited(hooks, rc)
            self.checkpoints.try_capture(hooks)
            for scanner in watched:
                line = scanner.scan()
                if line is not None:
                    reason = f"fatal pattern in {scanner.path.name}: {line.strip()}"
                    self._fail(hooks, proc, reason, capture=True)
            if s.progress_globs and last_samples is None and now - started > s.startup_timeout_s:
                reason = (
                    f"no progress file matching {s.progress_globs} within "
                    f"{s.startup_timeout_s:g}s of start"
                )
                self._fail(hooks, proc, reason, capture=False)
            if last_samples is not None and now - last_progress_at > s.progress_timeout_s:
                reason = (
                    f"no progress for {s.progress_timeout_s:g}s (stuck at {last_samples} samples)"
                )
                self._fail(hooks, proc, reason, capture=True)
            stop = hooks.check_stop()
            if stop is not None:
                return self._stop(hooks, proc, stop)
            time.sleep(POLL_S)

    def _stop(self, hooks: SegmentHooks, proc: CommandProcess, stop: StopRequest) -> EngineResult:
        grace = self.settings.stop_grace_s
        left = hooks.time_left_s()
        if left is not None:
            grace = max(1.0, min(grace, left - 2.0))
        log.info("command_stopping", pid=proc.pid, grace_s=grace)
        proc.signal(signal.SIGTERM)
        give_up = time.monotonic() + grace
        captured = False
        while time.monotonic() < give_up:
            exited = proc.poll() is not None
            if self.checkpoints.try_capture(hooks, newer_than=stop.requested_at, settled=exited):
                captured = True
                break
            if exited:
                break
            time.sleep(POLL_S)
        if captured:
            proc.end_now()  # the handoff must not wait out the program's own exit
        else:
            log.warning("command_no_checkpoint_after_stop", grace_s=grace)
            proc.kill()
        return EngineResult(outcome=Outcome.STOPPED, step=self.checkpoints.step, stop=stop)

    def _exited(self, hooks: SegmentHooks, rc: int) -> EngineResult:
        self.checkpoints.try_capture(hooks, settled=True)
        samples = self.checkpoints.step
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
        if self.proc is not None:
            self.proc.close()
