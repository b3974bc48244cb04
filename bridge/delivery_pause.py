"""Which listeners are paused (410 Gone, ``disable_after``, ``pollbridge pause``), as the
dispatcher knows it: read from the store at start, written there when an attempt pauses one,
and read again while any is paused, so that ``pollbridge resume`` from another process lands."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime

from bridge.config import ListenerConfig
from bridge.delivery_log import log_pause
from bridge.delivery_pace import failing_for, pause_reason
from bridge.errors import StoreError
from bridge.models import AttemptResult, ListenerState
from bridge.store import Store

log = logging.getLogger("pollbridge.deliver")

PAUSED_REFRESH_S = 2.0
"""While a listener is paused, how often the store is asked whether it was resumed."""


class Pauses:
    """The paused listeners' names, kept in step with the store."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
        *,
        resumed: Callable[[str], None],
    ) -> None:
        self.store = store
        self._resumed = resumed
        """Told of each listener resumed (by this process or another)."""
        self.clock = clock
        self.monotonic = monotonic
        self.names: set[str] = set()
        self._checked = -math.inf

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __bool__(self) -> bool:
        return bool(self.names)

    async def load(self) -> list[ListenerState]:
        """Read which listeners are paused; every listener's state, as read."""
        states = await self.store.list_listener_states()
        self.names = {s.name for s in states if s.paused}
        self._checked = self.monotonic()
        return states

    async def refresh(self, *, force: bool) -> list[str]:
        """Take in pauses and resumes made in the store by another process, at most every
        :data:`PAUSED_REFRESH_S` unless ``force``; the listeners resumed meanwhile."""
        if not force and (not self.names or self.monotonic() - self._checked < PAUSED_REFRESH_S):
            return []
        self._checked = self.monotonic()
        states = await self.store.list_listener_states()
        still = {s.name for s in states if s.paused}
        resumed = sorted(self.names - still)
        self.names = still
        for name in resumed:
            log.warning("listener %s was resumed", name, extra={"listener": name})
            self._resumed(name)
        return resumed

    async def resume(self, name: str) -> None:
        await self.store.set_listener_paused(name, False, None, self.clock())
        self.names.discard(name)
        self._resumed(name)

    async def pause(self, name: str, reason: str) -> None:
        """Pause ``name`` here at once, and in the store if it can be written."""
        self.names.add(name)
        self._checked = self.monotonic()
        try:
            await self.store.set_listener_paused(name, True, reason, self.clock())
        except StoreError as exc:  # the attempt is recorded all the same
            log.error("pausing %s: %s; it is paused in this process only", name, exc)

    def reason(
        self, listener: ListenerConfig, result: AttemptResult, failing_since: datetime | None
    ) -> str | None:
        """Why this result pauses the listener (410 Gone, or ``disable_after`` reached)."""
        if listener.name in self.names or result.ok:
            return None
        return pause_reason(listener, result, failing_since, self.clock())

    async def log(
        self, listener: ListenerConfig, result: AttemptResult, failing_since: datetime | None
    ) -> None:
        """Say that an attempt paused the listener, and how much is waiting for it."""
        failing = None if failing_since is None else failing_for(self.clock(), failing_since)
        waiting = 0 if result.gone else await self.store.pending_count([listener.name])
        log_pause(listener, result.gone, failing, waiting)
