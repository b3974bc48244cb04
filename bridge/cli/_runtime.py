"""The CLI's one door into the daemon's machinery: building a poller, a sender or a daemon,
the SQLite state lock, and writing the runtime status that ``pollbridge status`` reads.

Every verb that needs more than the store goes through here, so that when the services are
built in one shared place this is the only CLI module to change.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from bridge import __version__
from bridge.config import Config, SourceConfig
from bridge.errors import StoreError
from bridge.store import Store, create_store

if TYPE_CHECKING:
    from bridge.daemon import Daemon
    from bridge.daemon.status import RuntimeStatus
    from bridge.http.sender import Sender
    from bridge.outcome import PollOutcome


def utcnow() -> datetime:
    """The daemon's clock (UTC)."""
    from bridge.runtime import utcnow as runtime_clock

    return runtime_clock()


async def poll_once(
    config: Config, source: SourceConfig, commit: bool, store: Store
) -> PollOutcome:
    """Poll ``source`` once through the daemon's pipeline; closes ``store``."""
    from bridge.runtime import Services

    services = Services(config, store, deliver=False)
    try:
        return await services.pipeline.poll(source, commit=commit)
    finally:
        await services.aclose()
        await store.close()


@asynccontextmanager
async def open_sender(config: Config) -> AsyncIterator[Sender]:
    """The daemon's sender for the configured listeners (their TLS, proxies, private-target
    rule), closed on exit."""
    from bridge.runtime import build_sender

    sender, clients = build_sender(config, max_connections=4)
    try:
        yield sender
    finally:
        await clients.aclose()


def make_daemon(config: Config, log_level_override: str | None) -> Daemon:
    from bridge.daemon import Daemon

    return Daemon(config, log_level_override=log_level_override)


def claim_sqlite_state(location: str) -> int | None:
    """The daemon's exclusive lock on a SQLite state (None for PostgreSQL); StoreError when a
    daemon holds it."""
    from bridge.store import claim_state_lock as claim

    return claim(location)


def release(lock: int | None) -> None:
    if lock is not None:
        os.close(lock)


# -- `run --once`: what it did, recorded like a daemon's stop ---------------------------------


@dataclass(frozen=True)
class RunSummary:
    """What one ``run --once`` did."""

    polls: int
    failed: int
    """Polls that failed."""
    changes: int
    delivered: int
    pending: int
    dead: int
    """Deliveries that gave up during this run."""

    def line(self) -> str:
        text = (
            f"run --once: {self.polls} poll(s), {self.changes} change(s), "
            f"{self.delivered} delivered, {self.pending} pending, {self.failed} failed"
        )
        if self.dead:
            text += f", {self.dead} dead"
        return text


def _deliveries(daemon: Daemon, result: str) -> int:
    registry = daemon.metrics.registry
    return int(
        sum(
            registry.get_sample_value(
                "pollbridge_deliveries_total", {"listener": lst.name, "result": result}
            )
            or 0
            for lst in daemon.config.listeners
        )
    )


def once_status(
    config: Config, started_at: datetime, finished_at: datetime, summary: RunSummary
) -> RuntimeStatus:
    """The runtime status a finished ``run --once`` leaves, in the daemon's shape."""
    from bridge.daemon.schedule import schedule_text
    from bridge.daemon.status import ListenerRuntime, RuntimeStatus, SourceRuntime

    return RuntimeStatus(
        pid=os.getpid(),
        version=__version__,
        mode="once",
        started_at=started_at.isoformat(),
        heartbeat_at=finished_at.isoformat(),
        stopped_at=finished_at.isoformat(),
        config_files=list(config.files),
        http=None,
        sources={
            s.name: SourceRuntime(schedule_text(s), s.interval_s, next_poll_at=None)
            for s in config.sources
        },
        listeners={
            lst.name: ListenerRuntime(in_flight=0, paused=False, state="active")
            for lst in config.listeners
        },
        last_reload=None,
        last_run=asdict(summary),
    )


async def run_once(daemon: Daemon) -> tuple[int, RunSummary | None]:
    """``daemon.run_once()``, then its summary, recorded in the state so that ``status``
    shows the run. The summary is None when another daemon took the state meanwhile."""
    started_at = utcnow()
    code = await daemon.run_once()
    outcomes = list(daemon.stats.last_outcomes.values())
    polls = daemon.stats.polls_ok + daemon.stats.polls_failed
    changes = sum(len(o.changes) for o in outcomes if o.committed)
    location = daemon.config.state_location
    try:
        lock = claim_sqlite_state(location)
    except StoreError:
        return code, None  # a daemon started on this state since: its record is the one to keep
    try:
        store = create_store(location)
        await store.open()
        try:
            pending = await store.pending_count([lst.name for lst in daemon.config.listeners])
            summary = RunSummary(
                polls=polls,
                failed=daemon.stats.polls_failed,
                changes=changes,
                delivered=_deliveries(daemon, "delivered"),
                pending=pending,
                dead=_deliveries(daemon, "dead"),
            )
            await store.write_runtime(
                once_status(daemon.config, started_at, utcnow(), summary).to_dict()
            )
        finally:
            await store.close()
    finally:
        release(lock)
    return code, summary
