from datetime import timedelta

from freezegun import freeze_time

from relaymd.daemon.liveness import is_stale, liveness_reference, observe_heartbeat
from relaymd.mailbox.models import Heartbeat, WorkerState
from relaymd.models import GpuInfo, utcnow
from tests.daemon.daemon_factories import T0, make_alloc


def hb(seq: int, written_at=T0) -> Heartbeat:
    return Heartbeat(allocation_id="a1", seq=seq, state=WorkerState.IDLE, written_at=written_at)


def test_stale_after_seq_stops_moving_on_daemon_clock() -> None:
    alloc = make_alloc(started_at=T0)
    with freeze_time(T0) as clock:
        alloc = observe_heartbeat(alloc, hb(1), utcnow())
        clock.tick(timedelta(seconds=59))
        alloc = observe_heartbeat(alloc, hb(1), utcnow())
        assert not is_stale(alloc, utcnow(), 60)
        clock.tick(timedelta(seconds=1))
        alloc = observe_heartbeat(alloc, hb(1), utcnow())
        assert is_stale(alloc, utcnow(), 60)
        # The seq moves: fresh again, from the daemon's "now".
        alloc = observe_heartbeat(alloc, hb(2), utcnow())
        assert alloc.seq_changed_at == utcnow()
        assert not is_stale(alloc, utcnow(), 60)


def test_worker_clock_skew_is_ignored() -> None:
    """A worker whose clock is a day behind (or ahead) is alive as long as its seq moves."""
    alloc = make_alloc(started_at=T0)
    with freeze_time(T0) as clock:
        for seq in range(1, 6):
            skewed = T0 - timedelta(days=1) if seq % 2 else T0 + timedelta(days=1)
            alloc = observe_heartbeat(alloc, hb(seq, skewed), utcnow())
            clock.tick(timedelta(seconds=30))
            assert not is_stale(alloc, utcnow(), 60)
        # A fresh-looking written_at does not save a worker whose seq is stuck.
        clock.tick(timedelta(seconds=60))
        alloc = observe_heartbeat(alloc, hb(5, utcnow()), utcnow())
        assert is_stale(alloc, utcnow(), 60)


def test_missing_heartbeat_is_no_news_and_never_seen_counts_from_start() -> None:
    alloc = make_alloc(started_at=T0)
    assert observe_heartbeat(alloc, None, T0 + timedelta(seconds=5)) == alloc
    assert not is_stale(alloc, T0 + timedelta(seconds=59), 60)
    assert is_stale(alloc, T0 + timedelta(seconds=61), 60)
    # Not started (pending): nobody to hear from.
    assert not is_stale(make_alloc(), T0 + timedelta(days=1), 60)


def test_gpus_from_heartbeat_are_recorded() -> None:
    beat = hb(1).model_copy(update={"gpus": [GpuInfo(name="A100", memory_total_mib=40960)]})
    alloc = observe_heartbeat(make_alloc(), beat, T0)
    assert alloc.gpus[0].name == "A100"


def test_staleness_counts_from_the_daemon_start_at_the_earliest() -> None:
    restarted = T0 + timedelta(hours=3)
    alloc = make_alloc(started_at=T0, last_seq=7, seq_changed_at=T0 + timedelta(minutes=1))
    with freeze_time(restarted) as clock:
        # One missed read right after the restart: no news, and not stale yet.
        alloc = observe_heartbeat(alloc, None, utcnow())
        assert not is_stale(alloc, utcnow(), 60, not_before=restarted)
        assert liveness_reference(alloc, not_before=restarted) == restarted
        clock.tick(timedelta(seconds=60))
        assert is_stale(alloc, utcnow(), 60, not_before=restarted)
    # A seq change after the start is the reference as before.
    later = restarted + timedelta(seconds=30)
    moved = observe_heartbeat(alloc, hb(8), later)
    assert liveness_reference(moved, not_before=restarted) == later
    # Not started yet: still nobody to hear from.
    assert liveness_reference(make_alloc(), not_before=restarted) is None
