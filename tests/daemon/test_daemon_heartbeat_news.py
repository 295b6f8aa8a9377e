"""Heartbeat news held in memory between writes (ADR 0027) never hides a hung worker.

The real ClusterRunner, real read script, real SQLite file, with the daemon's clock stepped
by the test (30 s polls, the shipped heartbeat interval and `stale_after_s`). Verdicts come
from outside the daemon's memory: the stop control the write step puts in the worker's
mailbox folder, and the rows in the state file.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from relaymd.daemon import commit
from relaymd.daemon.runner import ClusterRunner
from relaymd.mailbox.layout import CONTROL_FILE
from relaymd.models import utcnow
from relaymd.state import AsyncStateStore
from tests.daemon.test_daemon_cycle_scale import Campaign

POLL_S = 30.0  # = the shipped heartbeat interval; stale_after_s is 75 (2.5 intervals)


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> None:
        self.now += timedelta(seconds=POLL_S)


def stopped(campaign: Campaign, i: int) -> bool:
    control = campaign.scratch / "alloc" / campaign.alloc_id(i) / CONTROL_FILE
    return control.exists() and json.loads(control.read_text())["action"] == "stop"


async def stored_seq(store: AsyncStateStore, alloc_id: str) -> int:
    async with store._conn.execute(
        "SELECT json_extract(data, '$.last_seq') FROM allocations WHERE id = ?", (alloc_id,)
    ) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def poll(campaign: Campaign, runner: ClusterRunner, store: AsyncStateStore) -> None:
    await campaign.cycle(runner, store)


@pytest.mark.parametrize(
    ("restart", "polls_to_stop"),
    [(None, 3), ("stopped", 3), ("killed", 4)],
    ids=["same daemon", "daemon stopped and started", "daemon killed and started"],
)
async def test_a_worker_that_stops_beating_is_stopped_on_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart: str | None, polls_to_stop: int
) -> None:
    """A daemon stopped cleanly writes the news it held, so after a restart the hang is
    declared as if it had run on; one killed (kill -9) lost up to 3 heartbeats of news, and
    the first heartbeat it reads counts as moving then: one poll later."""
    clock = Clock()
    monkeypatch.setattr(commit, "utcnow", clock)
    campaign = Campaign(tmp_path, running=8, queued=0)
    runner, store = await campaign.start(tmp_path)
    runner.ctx.started_at = clock.now
    try:
        await poll(campaign, runner, store)
        for _ in range(3):  # every worker beats: news mostly held, some of it written
            clock.tick()
            for i in range(8):
                campaign.beat(i)
            await poll(campaign, runner, store)
        newest = campaign.seq[campaign.alloc_id(0)]
        stored = [await stored_seq(store, campaign.alloc_id(i)) for i in range(8)]
        lagging = [i for i in range(8) if stored[i] < newest]
        assert lagging, f"no news held: {stored} vs {newest}"  # the case under test exists
        hung = lagging[0]
        if restart == "stopped":
            await runner.stop()
            assert await stored_seq(store, campaign.alloc_id(hung)) == newest
        if restart:  # a new daemon: nothing in memory
            runner = ClusterRunner(
                runner.ctx,
                runner.profile,
                transport_factory=runner._transport_factory,
                scheduler=runner.scheduler,
            )
            runner.ctx.started_at = clock.now
        polls = 0
        while not stopped(campaign, hung):
            clock.tick()
            polls += 1
            for i in range(8):
                if i != hung:
                    campaign.beat(i)
            await poll(campaign, runner, store)
            assert polls <= polls_to_stop, f"the hung worker was not stopped by poll {polls}"
        # On the daemon's clock, 90 s >= 75 since the seq last moved or the daemon started
        # (or, killed, since the first poll that found the seq ahead of the file).
        assert polls == polls_to_stop
        assert not any(stopped(campaign, i) for i in range(8) if i != hung)
    finally:
        await store.close()


async def test_an_operator_write_to_a_job_with_held_news_wins_and_the_relay_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`relaymd jobs cancel` writes the row the file has (its news lagging); the daemon drops
    the news it held for that job instead of refusing its commit, and carries out the
    cancel; the other jobs' news keeps moving."""
    from relaymd.models import OperatorRequest
    from relaymd.state import StateStore

    clock = Clock()
    monkeypatch.setattr(commit, "utcnow", clock)
    campaign = Campaign(tmp_path, running=8, queued=0)
    runner, store = await campaign.start(tmp_path)
    try:
        await poll(campaign, runner, store)
        for n in range(2):
            clock.tick()
            for i in range(8):
                campaign.beat(i, ns_per_day=110.0 + n)
            await poll(campaign, runner, store)
        with StateStore.open(store.path) as cli:
            stale = [
                job
                for job in (cli.get_job(f"j{i:05d}") for i in range(8))
                if job is not None and job.ns_per_day != 111.0
            ]
            assert stale, "no job with held news"  # the case under test exists
            job = stale[0]
            cli.update_job(
                job.model_copy(update={"operator_request": OperatorRequest.CANCEL}),
                expected_updated_at=job.updated_at,
            )
        clock.tick()
        for i in range(8):
            campaign.beat(i, ns_per_day=112.0)
        await poll(campaign, runner, store)  # a refused commit would fail this poll
        i = int(job.id[1:])
        assert stopped(campaign, i)
        assert not any(stopped(campaign, k) for k in range(8) if k != i)
    finally:
        await store.close()
