"""The shared context: which clusters count as supply, and when the daemon started."""

from __future__ import annotations

from freezegun import freeze_time

from relaymd.daemon.context import DaemonContext
from relaymd.models import DaemonSettings, StorageAccess, WorkerSettings
from relaymd.models.state import ClusterReachability, ClusterStatus
from tests.daemon.daemon_factories import T0, make_profile


def make_ctx(**profiles_enabled: bool) -> DaemonContext:
    profiles = {}
    for name, enabled in profiles_enabled.items():
        profiles[name] = make_profile(name).model_copy(update={"enabled": enabled})
    return DaemonContext(
        store=None,
        object_store=None,
        access=StorageAccess(url="file:///tmp/relaymd-storage"),
        profiles=profiles,
        settings=DaemonSettings(),
        worker=WorkerSettings(),
    )


def test_disabled_clusters_are_not_supply() -> None:
    ctx = make_ctx(c1=True, c2=True, c3=False)
    assert ctx.usable_clusters() == {"c1", "c2"}
    # The stored switch overrides the profile: c2 disabled at runtime, c3 enabled.
    ctx.note_cluster_status(
        [
            ClusterStatus(name="c2", enabled=False),
            ClusterStatus(name="c3", enabled=True),
            ClusterStatus(name="gone", enabled=True),  # no longer configured: ignored
        ]
    )
    assert ctx.usable_clusters() == {"c1", "c3"}
    ctx.reachability["c1"] = ClusterReachability.UNREACHABLE
    assert ctx.usable_clusters() == {"c3"}


def test_context_knows_when_the_daemon_started() -> None:
    with freeze_time(T0):
        assert make_ctx(c1=True).started_at == T0
