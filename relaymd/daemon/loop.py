"""The daemon process: one asyncio task per cluster, each cycling at its own pace.

A slow or unreachable cluster only delays itself: every task has its own transport and its
own timer; only the short decide+commit step is serialized through the store lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from typing import TYPE_CHECKING

from relaymd import __version__, paths
from relaymd.config import LoadedConfig
from relaymd.daemon.collector import CollectorSchedule
from relaymd.daemon.context import DaemonContext
from relaymd.daemon.interval import next_interval
from relaymd.daemon.lock import DaemonLock
from relaymd.daemon.runner import ClusterRunner
from relaymd.daemon.seams import TransportFactory
from relaymd.logging import get_logger
from relaymd.models import utcnow
from relaymd.models.state import DaemonStatus
from relaymd.state.files import state_path

if TYPE_CHECKING:
    from pydantic import SecretStr

    from relaymd.models import StorageAccess
    from relaymd.storage.base import ObjectStore

log = get_logger(__name__)


async def _open_storage(loaded: LoadedConfig) -> tuple[StorageAccess, ObjectStore]:
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.storage import open_store

    provider = make_secrets_provider(loaded.config.secrets)
    access = await asyncio.to_thread(storage_access, loaded.config, provider)
    return access, await asyncio.to_thread(open_store, access)


async def _salad_keys(loaded: LoadedConfig) -> dict[str, SecretStr]:
    from relaymd.providers.salad.keys import salad_api_keys
    from relaymd.secrets import make_secrets_provider

    provider = make_secrets_provider(loaded.config.secrets)
    return await asyncio.to_thread(salad_api_keys, loaded.clusters, provider)


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        interactive: bool = False,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self.loaded = loaded
        self.interactive = interactive
        self.transport_factory = transport_factory
        self.ctx: DaemonContext | None = None
        self.runners: list[ClusterRunner] = []
        self.status: DaemonStatus | None = None
        self.collector = CollectorSchedule()

    async def _record_cycle(self) -> None:
        assert self.ctx is not None and self.status is not None
        self.status = self.status.model_copy(
            update={"last_cycle_at": utcnow(), "cycles": self.status.cycles + 1}
        )
        async with self.ctx.store_lock:
            await self.ctx.store.set_daemon_status(self.status)

    async def _cluster_task(
        self, runner: ClusterRunner, stop: asyncio.Event, max_cycles: int | None
    ) -> None:
        settings = self.loaded.config.daemon
        while not stop.is_set():
            try:
                report = await runner.cycle()
            except Exception:
                # A bug or a store hiccup in one cluster's cycle must not kill the daemon.
                log.exception("cycle_crashed", cluster=runner.name)
                report = None
            runner.cycles += 1
            await self._record_cycle()
            self.collector.between_cycles()
            if max_cycles is not None and runner.cycles >= max_cycles:
                return
            runner.interval = next_interval(
                runner.interval,
                runner.profile.poll,
                changed=bool(report and report.changed),
                busy=bool(report and report.busy),
                idle_cap=settings.idle_poll_interval_s,
                busy_cap=self.loaded.config.worker.heartbeat_interval_s,
                failed=report is None or not report.ok,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=runner.interval)

    async def run(self, stop: asyncio.Event, max_cycles: int | None = None) -> None:
        from relaymd.state import AsyncStateStore

        store = await AsyncStateStore.open(state_path(self.loaded.config))
        try:
            access, object_store = await _open_storage(self.loaded)
            config = self.loaded.config
            self.ctx = DaemonContext(
                store=store,
                object_store=object_store,
                access=access,
                profiles={p.name: p for p in self.loaded.clusters},
                settings=config.daemon,
                worker=config.worker,
            )
            self.ctx.salad_keys = await _salad_keys(self.loaded)  # ADR 0025
            self.runners = [
                ClusterRunner(
                    self.ctx,
                    p,
                    interactive=self.interactive,
                    transport_factory=self.transport_factory,
                )
                for p in self.loaded.clusters
            ]
            self.status = DaemonStatus(
                pid=os.getpid(), hostname=socket.gethostname(), version=__version__
            )
            async with self.ctx.store_lock:
                await store.set_daemon_status(self.status)
            log.info("daemon_started", clusters=[r.name for r in self.runners], pid=os.getpid())
            tasks = [
                asyncio.create_task(self._cluster_task(r, stop, max_cycles), name=r.name)
                for r in self.runners
            ]
            self.collector.start()
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.collector.stop()
        finally:
            for runner in self.runners:
                try:
                    await runner.stop()
                except Exception:
                    log.exception("runner_stop_failed", cluster=runner.name)
            await store.close()
            log.info("daemon_stopped")


async def run_daemon(
    loaded: LoadedConfig,
    *,
    interactive: bool = False,
    stop: asyncio.Event | None = None,
    max_cycles: int | None = None,
    transport_factory: TransportFactory | None = None,
) -> None:
    """Run until `stop` is set (or each cluster did `max_cycles` cycles).

    Holds the single-instance lock for its whole life; raises DaemonAlreadyRunning when
    another daemon holds it.
    """
    stop = stop or asyncio.Event()
    # The XDG lock is what `relaymd daemon status` reads; the one beside the state file stops a
    # second daemon that shares the state file under another XDG state dir. Resolved first:
    # a state file reached through a symlink must lock the same file as its target.
    state_file = state_path(loaded.config).resolve()
    locks = [
        DaemonLock(paths.daemon_lock()),
        DaemonLock(state_file.with_name(state_file.name + ".lock")),
    ]
    held: list[DaemonLock] = []
    try:
        for lock in locks:
            lock.acquire()
            held.append(lock)
        await Daemon(loaded, interactive=interactive, transport_factory=transport_factory).run(
            stop, max_cycles
        )
    finally:
        for lock in reversed(held):
            lock.release()


def run_daemon_blocking(
    loaded: LoadedConfig, *, interactive: bool = False, max_cycles: int | None = None
) -> None:
    """SIGINT/SIGTERM finish the current cycles, close connections and return."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_daemon(loaded, interactive=interactive, stop=stop, max_cycles=max_cycles)

    asyncio.run(main())
