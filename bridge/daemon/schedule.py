"""When each source is polled: APScheduler jobs on a fixed grid, one per source."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bridge.config import SourceConfig
from bridge.core.durations import format_duration

RETENTION_EVERY = timedelta(days=1)
RETENTION_FIRST_AFTER = timedelta(minutes=10)


def build_trigger(source: SourceConfig) -> IntervalTrigger | CronTrigger:
    """An on-grid trigger; jitter is applied inside the job so the grid never drifts."""
    if source.cron is not None:
        return CronTrigger.from_crontab(source.cron, timezone="UTC")
    assert source.every is not None  # noqa: S101 - validated by the config
    return IntervalTrigger(seconds=source.every.total_seconds(), timezone="UTC")


def source_period_s(source: SourceConfig, now: datetime) -> float:
    """The time between two polls of ``source`` (for a cron source, around ``now``)."""
    if source.interval_s is not None:
        return source.interval_s
    trigger = build_trigger(source)
    first = trigger.get_next_fire_time(None, now)
    second = None if first is None else trigger.get_next_fire_time(first, first)
    if first is None or second is None:
        return 86400.0
    return float((second - first).total_seconds())


def stale_after_s(source: SourceConfig, now: datetime) -> float:
    """A source with no successful poll for this long is reported stale by ``/healthz``."""
    period = source_period_s(source, now)
    return max(3 * period, period + 60)


def schedule_text(source: SourceConfig) -> str:
    """``every 30s`` or ``cron */5 * * * *``, as status and check show it."""
    return f"every {format_duration(source.every)}" if source.every else f"cron {source.cron}"


def _schedule_key(source: SourceConfig) -> tuple[Any, ...]:
    return (source.every, source.cron)


class Schedule:
    """The poll jobs (``poll:NAME``) and the daily retention job, on one AsyncIOScheduler."""

    def __init__(
        self,
        poll: Callable[[str], Awaitable[Any]],
        prune: Callable[[], Awaitable[None]],
    ) -> None:
        self._poll = poll
        self._prune = prune
        self.scheduler: AsyncIOScheduler | None = None

    @property
    def running(self) -> bool:
        return self.scheduler is not None and self.scheduler.state == STATE_RUNNING

    def start(self, sources: Iterable[SourceConfig], now: datetime) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        self.scheduler = scheduler
        for source in sources:
            self.add(source, now)
        scheduler.add_job(
            self._prune,
            IntervalTrigger(seconds=RETENTION_EVERY.total_seconds(), timezone="UTC"),
            id="retention",
            name="retention",
            max_instances=1,
            coalesce=True,
            next_run_time=now + RETENTION_FIRST_AFTER,
        )
        scheduler.start()

    def add(self, source: SourceConfig, now: datetime) -> None:
        """Schedule ``source`` (again, replacing its job)."""
        assert self.scheduler is not None  # noqa: S101 - started first
        grace = int(source.interval_s or 60)
        self.scheduler.add_job(
            self._poll,
            build_trigger(source),
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

    def remove(self, name: str) -> None:
        if self.scheduler is not None:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(f"poll:{name}")

    def reschedule(self, old: SourceConfig, new: SourceConfig, now: datetime) -> None:
        """A changed source keeps its grid unless its ``every`` or ``cron`` changed."""
        if self.scheduler is not None and _schedule_key(old) != _schedule_key(new):
            self.add(new, now)

    def next_poll_at(self, name: str) -> datetime | None:
        if self.scheduler is None:
            return None
        job = self.scheduler.get_job(f"poll:{name}")
        next_at: datetime | None = getattr(job, "next_run_time", None) if job else None
        return next_at

    def poll_now(self, name: str, now: datetime) -> bool:
        """Move ``name``'s next scheduled poll to ``now`` (one poll at a time still holds);
        False when the source has no job (unknown, or the scheduler is not running)."""
        job = None if self.scheduler is None else self.scheduler.get_job(f"poll:{name}")
        if job is None:
            return False
        job.modify(next_run_time=now)
        return True

    def pause(self) -> None:
        """Start no new job; running polls go on (shutdown() would cancel them mid-poll)."""
        if self.scheduler is not None:
            self.scheduler.pause()

    def shutdown(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
