"""Whether the daemon is healthy: what ``/healthz``, the systemd watchdog and ``status`` say.

Healthy means: the scheduler runs, every vital task (the delivery loop, the heartbeat, the
lease keeper) is alive, the store took a write recently, the state file is the one opened,
and no poll is stuck far past its own timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pollbridge.daemon")

STORE_HEALTHY_S = 30.0
"""The store counts as healthy while its last successful write is at most this old."""
STUCK_POLL_MARGIN_S = 60.0
"""A poll still running this long after its source's timeout is reported stuck."""


class Health:
    """The daemon's health, fed by the heartbeat and the tasks it watches."""

    def __init__(
        self,
        *,
        stopping: Callable[[], bool],
        on_task_died: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stopping = stopping
        self._on_task_died = on_task_died
        self._clock = clock
        self.store_healthy_s = STORE_HEALTHY_S
        self.store_ok_at: float | None = None
        self.store_error: str | None = None
        self.state_lost: str | None = None
        self.scheduler_running: Callable[[], bool] = lambda: False
        self._vital: dict[str, asyncio.Task[Any]] = {}
        self._polls: dict[str, tuple[float, float]] = {}
        """source -> (monotonic start, the source's timeout in seconds) of a running poll."""

    # -- feeding ----------------------------------------------------------------------------

    def store_written(self) -> None:
        self.store_ok_at = self._clock()

    def store_failed(self, error: str) -> None:
        if self.store_error is None:
            log.error("the state store is not healthy: %s", error)
        self.store_error = error

    def store_recovered(self) -> None:
        if self.store_error is not None:
            log.info("the state store is writable again")
        self.store_error = None

    def poll_started(self, source: str, timeout_s: float) -> None:
        self._polls[source] = (self._clock(), timeout_s)

    def poll_ended(self, source: str) -> None:
        self._polls.pop(source, None)

    def watch(self, what: str, task: asyncio.Task[Any]) -> None:
        """``task`` must run until the daemon stops: if it ends sooner, say why, count it and
        report the daemon unhealthy (``/healthz`` 503, no watchdog ping, ``status``)."""
        self._vital[what] = task

        def ended(done: asyncio.Task[Any]) -> None:
            if self._stopping() or done.cancelled():
                return
            exc = done.exception()
            self._on_task_died(done.get_name())
            log.critical(
                "%s stopped unexpectedly%s; the daemon is unhealthy until restarted",
                what,
                f": {exc!r}" if exc is not None else "",
                exc_info=exc,
            )

        task.add_done_callback(ended)

    # -- reading ----------------------------------------------------------------------------

    @property
    def died(self) -> list[str]:
        """The vital tasks that ended with an exception."""
        return [
            what
            for what, task in self._vital.items()
            if task.done() and not task.cancelled() and task.exception() is not None
        ]

    def store_age_s(self) -> float | None:
        return None if self.store_ok_at is None else self._clock() - self.store_ok_at

    def problems(self) -> list[str]:
        """Why the daemon is unhealthy; empty when it is healthy."""
        problems = []
        if not self.scheduler_running():
            problems.append("the scheduler is not running")
        if self.state_lost is not None:
            problems.append(self.state_lost)
        if not self._stopping():
            for what, task in self._vital.items():
                if task.done():
                    exc = None if task.cancelled() else task.exception()
                    problems.append(f"{what} stopped" + (f" ({exc!r})" if exc else ""))
        now = self._clock()
        for source, (started, timeout_s) in sorted(self._polls.items()):
            running_s = now - started
            if running_s > timeout_s + STUCK_POLL_MARGIN_S:
                problems.append(
                    f"the poll of {source} is stuck: running for {running_s:.0f}s "
                    f"(its timeout is {timeout_s:g}s)"
                )
        age = self.store_age_s()
        if age is None:
            problems.append("the state store has not been written yet")
        elif age > self.store_healthy_s:
            problems.append(
                f"the state store took no write for {age:.0f}s"
                + (f" ({self.store_error})" if self.store_error else "")
            )
        return problems
