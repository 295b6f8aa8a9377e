"""Pure parts of the worker: deadlines, the adaptive margin, checkpoint-set capture."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker_entry.engines.fileset import CheckpointSetWatcher, count_samples
from worker_entry.margin import HandoffMargin
from worker_entry.options import DeadlineError, parse_deadline, resolve_deadline


def test_parse_deadline_forms() -> None:
    assert parse_deadline("1700000000") == datetime.fromtimestamp(1700000000, UTC)
    assert parse_deadline("2025-01-31T18:00:00+00:00") == datetime(2025, 1, 31, 18, tzinfo=UTC)
    assert parse_deadline("N/A") is None and parse_deadline("Unknown") is None
    with pytest.raises(DeadlineError, match="ISO-8601"):
        parse_deadline("tomorrow")


def test_resolve_deadline_order() -> None:
    env = {"RELAYMD_DEADLINE": "100", "SLURM_JOB_END_TIME": "200"}
    assert resolve_deadline("50", env) == datetime.fromtimestamp(50, UTC)
    assert resolve_deadline(None, env) == datetime.fromtimestamp(100, UTC)
    assert resolve_deadline(None, {"SLURM_JOB_END_TIME": "200"}) == datetime.fromtimestamp(200, UTC)
    assert resolve_deadline(None, {}) is None


def test_margin_adapts_within_bounds() -> None:
    margin = HandoffMargin(10, 100)
    assert margin.seconds == 100  # before any measurement: the conservative guess, capped
    margin.observe(2)
    assert margin.seconds == 10  # 2*2+5 = 9, floored at the minimum
    margin.observe(20)
    assert margin.seconds == 45
    margin.observe(500)
    assert margin.seconds == 100


def test_checkpoint_set_needs_marker_and_settling(tmp_path: Path) -> None:
    (tmp_path / "r0").mkdir()
    (tmp_path / "r1").mkdir()
    watcher = CheckpointSetWatcher(tmp_path, ["r*/*_ckpt.xml"], ["r*/*.out"], "ckpt_is_valid", 0.2)
    (tmp_path / "r0" / "a_ckpt.xml").write_text("1")
    (tmp_path / "r1" / "a_ckpt.xml").write_text("1")
    assert watcher.ready() is None  # no marker: a round is being written
    (tmp_path / "ckpt_is_valid").write_text("")
    assert watcher.ready() is None  # first sight: wait for it to settle
    time.sleep(0.25)
    files = watcher.ready()
    assert files is not None and len(files) == 3
    (tmp_path / "r0" / "a.out").write_text("s1\n")
    copied = watcher.capture(files, tmp_path / "copy")
    assert copied is not None
    assert {rel for rel, _ in copied} == {
        "ckpt_is_valid", "r0/a_ckpt.xml", "r1/a_ckpt.xml", "r0/a.out"
    }  # fmt: skip
    assert watcher.ready(settled=True) is None  # already captured
    (tmp_path / "r0" / "a_ckpt.xml").write_text("22")
    assert watcher.ready(newer_than=time.time() + 60, settled=True) is None


def test_count_samples_is_the_slowest_replica(tmp_path: Path) -> None:
    assert count_samples(tmp_path, ["r*/*.out"]) is None
    for k, n in ((0, 5), (1, 3)):
        (tmp_path / f"r{k}").mkdir()
        (tmp_path / f"r{k}" / "x.out").write_text("".join(f"{i}\n" for i in range(n)) + "\n")
    assert count_samples(tmp_path, ["r*/*.out"]) == 3
