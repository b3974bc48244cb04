"""Which sources this instance polls when several instances share one store.

Each source has a lease in the store (owner, expiry, fencing token). An instance polls a source
only under its lease and its commit carries the token, so a poll that outlived its lease cannot
commit. A heartbeat renews the leases every third of the lease and evens out the load: an instance
holding more than its share (sources / live instances, rounded up) lets the surplus go, and the
others pick it up at their next tick. A dead instance's leases expire; anyone takes them then.

With a single-instance store (SQLite) every call is granted at once, so nothing changes there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from bridge.errors import StoreError
from bridge.store import InstanceInfo, Store, is_shared

log = logging.getLogger("pollbridge.leases")

# Trust a lease locally for this share of its length after the renewal started, so a slow
# heartbeat stops our polls before the database hands the lease to someone else.
_LOCAL_VALIDITY = 0.8


def this_instance(now: datetime | None = None) -> InstanceInfo:
    """A fresh identity for this process: host, pid and a random suffix (pids get reused)."""
    host = socket.gethostname()
    pid = os.getpid()
    return InstanceInfo(
        id=f"{host}-{pid}-{secrets.token_hex(3)}",
        host=host,
        pid=pid,
        started_at=now or datetime.now(UTC),
    )


class LeaseKeeper:
    """Holds, renews and balances this instance's source leases."""

    def __init__(
        self, store: Store, instance: InstanceInfo, sources: Sequence[str], lease_s: float
    ):
        self.store = store
        self.instance = instance
        self.lease_s = lease_s
        self._sources = list(sources)
        self._held: dict[str, tuple[int, float]] = {}
        """source -> (fencing token, monotonic time until which we trust it)"""
        self._busy: set[str] = set()
        self._cooling: dict[str, float] = {}
        """Sources we let go, not retaken until the monotonic time given (others take them)."""
        self._share = max(1, len(self._sources))
        self.live_instances = 1
        # a single-instance store (SQLite) grants every lease: saying so is noise there
        self._lease_log_level = logging.INFO if is_shared(store.location) else logging.DEBUG

    @property
    def interval_s(self) -> float:
        """Time between heartbeats."""
        return self.lease_s / 3

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def set_sources(self, sources: Sequence[str]) -> None:
        """Take a new source list (reload); leases on removed sources go at the next beat."""
        self._sources = list(sources)
        self._share = max(1, math.ceil(len(self._sources) / self.live_instances))

    async def beat(self) -> None:
        """One heartbeat: say we are alive, renew our leases, let go of our surplus."""
        started = time.monotonic()
        beat = await self.store.heartbeat(self.instance, list(self._held), self.lease_s)
        for source in set(self._held) - set(beat.tokens):
            log.warning(
                "lease on source %s was lost (heartbeat too late); another instance polls it",
                source,
                extra={"source": source},
            )
        valid_until = started + self.lease_s * _LOCAL_VALIDITY
        self._held = {s: (token, valid_until) for s, token in beat.tokens.items()}
        self.live_instances = beat.live_instances
        self._share = max(1, math.ceil(len(self._sources) / beat.live_instances))
        known = set(self._sources)
        surplus = [s for s in self._held if s not in known]
        excess = len(self._held) - len(surplus) - self._share
        if excess > 0:
            idle = sorted(s for s in self._held if s in known and s not in self._busy)
            surplus += idle[-excess:]
        if surplus:
            await self.store.release_source_leases(self.instance.id, surplus)
            now = time.monotonic()
            for source in surplus:
                self._held.pop(source, None)
                self._cooling[source] = now + self.lease_s
            log.info(
                "released %d source lease(s) to balance %d instance(s): %s",
                len(surplus),
                beat.live_instances,
                ", ".join(sorted(surplus)),
            )

    async def run(self) -> None:
        """Heartbeat until cancelled; store errors are logged, never fatal."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.beat()
            except StoreError as exc:
                log.error("heartbeat: %s; our leases expire unless the next one succeeds", exc)

    async def acquire(self, source: str) -> int | None:
        """The fencing token to poll ``source`` under, or None when another instance polls it."""
        now = time.monotonic()
        held = self._held.get(source)
        if held is not None and held[1] > now:
            return held[0]
        if self._cooling.get(source, 0.0) > now:
            return None
        # At our share, take only leases whose owner died; free ones are for the others.
        at_share = len(self._held) >= self._share and held is None
        token = await self.store.acquire_source_lease(
            source, self.instance.id, self.lease_s, orphans_only=at_share
        )
        if token is None:
            self._held.pop(source, None)
            return None
        if held is None:
            log.log(
                self._lease_log_level,
                "took the lease on source %s",
                source,
                extra={"source": source},
            )
        self._held[source] = (token, now + self.lease_s * _LOCAL_VALIDITY)
        return token

    @contextlib.asynccontextmanager
    async def polling(self, source: str) -> AsyncIterator[int | None]:
        """Hold ``source`` for one poll: yields its token (None: skip this tick)."""
        try:
            token = await self.acquire(source)
        except StoreError as exc:
            log.warning("poll %s skipped: %s", source, exc, extra={"source": source})
            token = None
        if token is None:
            yield None
            return
        self._busy.add(source)
        try:
            yield token
        finally:
            self._busy.discard(source)

    async def leave(self) -> None:
        """Give every lease back now (clean stop), so the others need not wait for expiry."""
        self._held.clear()
        await self.store.leave(self.instance.id)
