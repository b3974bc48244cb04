"""``pollbridge run``: schedule every source, deliver every change, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bridge.config import Config, SourceConfig
from bridge.dispatcher import Dispatcher
from bridge.models import Event
from bridge.pipeline import Pipeline, PollOutcome, describe_outcome
from bridge.poller import HostLimiter, Poller
from bridge.sender import Sender
from bridge.store import Store, create_store

log = logging.getLogger("pollbridge.daemon")

EXIT_OK = 0
EXIT_POLL_FAILED = 1
EXIT_PENDING = 75  # EX_TEMPFAIL: deliveries are still waiting for a retry


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunStats:
    polls_failed: int = 0
    polls_ok: int = 0
    last_outcomes: dict[str, PollOutcome] = field(default_factory=dict)


def build_trigger(source: SourceConfig) -> IntervalTrigger | CronTrigger:
    """An on-grid trigger; jitter is applied inside the job so the grid never drifts."""
    if source.cron is not None:
        return CronTrigger.from_crontab(source.cron, timezone="UTC")
    assert source.every is not None  # noqa: S101 - validated by the config
    return IntervalTrigger(seconds=source.every.total_seconds(), timezone="UTC")


class Daemon:
    """Owns the store, the HTTP clients, the scheduler, the pipeline and the dispatcher."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] = utcnow,
        store: Store | None = None,
    ):
        self.config = config
        self.clock = clock
        self.store = store or create_store(config.state_location)
        self.stats = RunStats()
        self.rng = random.Random()  # noqa: S311 - jitter, not security
        self._stop = asyncio.Event()
        self._polls: set[asyncio.Task[Any]] = set()
        self._poll_client: httpx.AsyncClient | None = None
        self._send_client: httpx.AsyncClient | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.pipeline: Pipeline | None = None
        self.dispatcher: Dispatcher | None = None

    # -- set-up -----------------------------------------------------------------------------

    async def _start(self) -> None:
        await self.store.open()
        self._poll_client = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        in_flight = sum(lst.max_in_flight for lst in self.config.listeners) or 1
        self._send_client = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight),
        )
        self.dispatcher = Dispatcher(
            self.store,
            Sender(self._send_client),
            list(self.config.listeners),
            clock=self.clock,
            ignore_paths={s.name: s.ignore_paths for s in self.config.sources},
        )
        self.pipeline = Pipeline(
            self.config,
            self.store,
            Poller(
                self._poll_client,
                HostLimiter(self.config.bridge.per_host_concurrency, self.config.min_intervals_s()),
            ),
            clock=self.clock,
            on_commit=self._on_commit,
        )

    def _on_commit(self, events: list[Event]) -> None:
        if self.dispatcher is not None:
            self.dispatcher.events_committed()

    async def _close(self) -> None:
        for client in (self._poll_client, self._send_client):
            if client is not None:
                await client.aclose()
        await self.store.close()

    # -- polling ----------------------------------------------------------------------------

    async def poll_source(self, name: str) -> PollOutcome | None:
        """One scheduled poll (jitter, backoff and shutdown respected); never raises."""
        task = asyncio.current_task()
        if task is not None:
            self._polls.add(task)
        try:
            if self._stop.is_set():
                return None
            source = self._source(name)
            if source is None:
                return None
            if await self._postponed(source):
                return None
            if source.jitter.total_seconds() > 0:
                await asyncio.sleep(self.rng.uniform(0, source.jitter.total_seconds()))
            return await self._poll_now(source)
        except Exception:
            log.exception("poll of %s: unexpected error", name, extra={"source": name})
            self.stats.polls_failed += 1
            return None
        finally:
            if task is not None:
                self._polls.discard(task)

    async def _postponed(self, source: SourceConfig, level: int = logging.DEBUG) -> bool:
        """Whether the source is backing off or was told to wait (Retry-After): skip this run."""
        assert self.pipeline is not None  # noqa: S101
        until = await self.pipeline.postponed_until(source.name, self.clock())
        if until is not None:
            log.log(
                level,
                "poll %s skipped: postponed until %s (backoff or Retry-After)",
                source.name,
                until.isoformat(timespec="seconds"),
                extra={"source": source.name},
            )
        return until is not None

    def _source(self, name: str) -> SourceConfig | None:
        for s in self.config.sources:
            if s.name == name:
                return s
        return None

    async def _poll_now(self, source: SourceConfig) -> PollOutcome:
        assert self.pipeline is not None  # noqa: S101
        outcome = await self.pipeline.poll(source)
        self.stats.last_outcomes[source.name] = outcome
        fields = describe_outcome(outcome)
        if outcome.ok:
            self.stats.polls_ok += 1
            changed = fields["created"] + fields["updated"] + fields["deleted"]
            level = logging.INFO if changed or outcome.result != "unchanged" else logging.DEBUG
            log.log(
                level,
                "poll %s: %s, %d items, %d created, %d updated, %d deleted (%.0f ms)",
                source.name,
                outcome.result,
                outcome.item_count,
                fields["created"],
                fields["updated"],
                fields["deleted"],
                outcome.duration_s * 1000,
                extra={"source": source.name},
            )
        else:
            self.stats.polls_failed += 1
            later = ""
            if outcome.not_before is not None:
                later = f"; next poll not before {outcome.not_before.isoformat(timespec='seconds')}"
            log.warning(
                "%s%s",
                outcome.error,
                later,
                extra={"source": source.name},
            )
        return outcome

    def _schedule(self) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        now = self.clock()
        for source in self.config.sources:
            self._add_job(scheduler, source, now)
        scheduler.start()
        self.scheduler = scheduler

    def _add_job(self, scheduler: AsyncIOScheduler, source: SourceConfig, now: datetime) -> None:
        trigger = build_trigger(source)
        grace = int(source.interval_s or 60)
        scheduler.add_job(
            self.poll_source,
            trigger,
            args=[source.name],
            id=f"poll:{source.name}",
            name=f"poll {source.name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, grace),
            # an interval source polls at start-up; a cron source waits for its first slot
            next_run_time=now if source.cron is None else None,
            replace_existing=True,
        )

    # -- running ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM / SIGINT)."""
        if not self._stop.is_set():
            log.info("stopping: finishing in-flight polls and deliveries")
        self._stop.set()

    async def run(self) -> int:
        """Run until stopped; return the exit code."""
        await self._start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        assert self.dispatcher is not None  # noqa: S101
        dispatch = asyncio.create_task(self.dispatcher.run(), name="dispatcher")
        try:
            self._schedule()
            log.info(
                "pollbridge running: %d source(s), %d listener(s), state %s",
                len(self.config.sources),
                len(self.config.listeners),
                self.config.redact(self.config.state_location),
            )
            await self._stop.wait()
            await self._shutdown(dispatch)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            if not dispatch.done():
                dispatch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatch
            await self._close()
        return EXIT_OK

    async def _shutdown(self, dispatch: asyncio.Task[None]) -> None:
        grace_s = self.config.bridge.shutdown_grace.total_seconds()
        deadline = asyncio.get_running_loop().time() + grace_s
        if self.scheduler is not None:
            # pause first: shutdown() would cancel running coroutine jobs mid-poll
            self.scheduler.pause()
        if self._polls:
            _done, pending = await asyncio.wait(list(self._polls), timeout=grace_s)
            for t in pending:
                t.cancel()
        assert self.dispatcher is not None  # noqa: S101
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        await self.dispatcher.stop(remaining)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(dispatch, timeout=1.0)
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        log.info("stopped")

    async def run_once(self) -> int:
        """Poll every source once, deliver what is due, exit (0, 1 = a poll failed, 75 = pending)."""
        await self._start()
        try:
            assert self.pipeline is not None  # noqa: S101
            due = [s for s in self.config.sources if not await self._postponed(s, logging.INFO)]
            outcomes = await asyncio.gather(
                *(self._poll_now(s) for s in due), return_exceptions=False
            )
            assert self.dispatcher is not None  # noqa: S101
            await self.dispatcher.run_until_idle()
            pending = await self.store.pending_count([lst.name for lst in self.config.listeners])
        finally:
            await self._close()
        if any(not o.ok for o in outcomes):
            return EXIT_POLL_FAILED
        if pending:
            log.warning("%d delivery(ies) still pending (retries scheduled)", pending)
            return EXIT_PENDING
        return EXIT_OK


def next_poll_time(daemon: Daemon, source: str) -> datetime | None:
    if daemon.scheduler is None:
        return None
    job = daemon.scheduler.get_job(f"poll:{source}")
    return None if job is None else job.next_run_time


__all__ = ["EXIT_OK", "EXIT_PENDING", "EXIT_POLL_FAILED", "Daemon", "next_poll_time"]
