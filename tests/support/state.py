"""Read a daemon's state through the store interface, for waits and assertions in e2e tests.

The same calls work on a SQLite file and on a PostgreSQL URL, and they survive schema changes:
tests never read the tables themselves. Each call opens the store read-only (beside a running
daemon, the way ``pollbridge status`` does) and closes it again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import StoreError
from bridge.models import Event, ListenerState, SourceState
from bridge.store import (
    AttemptInfo,
    DeliveryInfo,
    DeliveryQuery,
    EventQuery,
    EventRecord,
    Store,
)
from tests.support.daemon import eventually

try:  # the one public place that picks a backend (its name may become open_store)
    from bridge.store import open_store as _store_for  # type: ignore[attr-defined]
except ImportError:
    from bridge.store import create_store as _store_for

T = TypeVar("T")


def is_postgres(location: str | Path) -> bool:
    """Whether a state location names PostgreSQL rather than a SQLite file."""
    return str(location).startswith(("postgresql://", "postgres://"))


EVERYTHING = 10**9
"""A ``limit`` no test reaches."""


class StateView:
    """What a daemon's state holds, read through the public store interface."""

    def __init__(self, location: str | Path):
        self.location = str(location)

    def _read(self, body: Callable[[Store], Awaitable[T]]) -> T:
        async def go() -> T:
            store = _store_for(self.location, access="read")
            await store.open()
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def exists(self) -> bool:
        """Whether the state can be opened yet (the daemon created and migrated it)."""
        try:
            self._read(lambda s: s.list_source_states())
        except StoreError:
            return False
        return True

    def events(self, **query: Any) -> list[EventRecord]:
        """Every event (oldest first) with its deliveries' states; ``query``: EventQuery fields."""
        q = EventQuery(limit=EVERYTHING, **query)
        return self._read(lambda s: s.list_events(q))

    def event_list(self) -> list[Event]:
        return [r.event for r in self.events()]

    def deliveries(self, **query: Any) -> list[DeliveryInfo]:
        """Every delivery (oldest first); ``query``: DeliveryQuery fields (listener, state, ...)."""
        q = DeliveryQuery(limit=EVERYTHING, **query)
        return sorted(self._read(lambda s: s.list_deliveries(q)), key=lambda d: d.id)

    def states(self, **query: Any) -> dict[str, int]:
        """Delivery state -> how many (``{"delivered": 3, "pending": 1}``)."""
        return dict(Counter(d.state for d in self.deliveries(**query)))

    def count(self, **query: Any) -> int:
        return len(self.deliveries(**query))

    def attempts(self, **query: Any) -> list[AttemptInfo]:
        """Every recorded attempt of the deliveries ``query`` selects."""

        async def body(store: Store) -> list[AttemptInfo]:
            found = await store.list_deliveries(DeliveryQuery(limit=EVERYTHING, **query))
            out: list[AttemptInfo] = []
            for d in sorted(found, key=lambda d: d.id):
                out += await store.list_attempts(d.id)
            return out

        return self._read(body)

    def sources(self) -> dict[str, SourceState]:
        return {s.name: s for s in self._read(lambda s: s.list_source_states())}

    def listeners(self) -> dict[str, ListenerState]:
        return {s.name: s for s in self._read(lambda s: s.list_listener_states())}

    def items(self, source: str) -> dict[str, Any]:
        """The stored snapshot of ``source``: key text -> item."""

        async def body(store: Store) -> dict[str, Any]:
            hashes = await store.load_hashes(source)
            loaded = await store.load_items(source, sorted(hashes.hashes))
            return {key: value for key, (_k, value) in loaded.items()}

        return self._read(body)

    def pending(self) -> int:
        """Deliveries not yet finished (pending, whatever their attempts)."""
        return self._read(lambda s: s.pending_count())

    def wait(
        self,
        probe: Callable[[StateView], T | None],
        timeout_s: float = 20,
        what: str = "the state to change",
    ) -> T:
        """Call ``probe(self)`` until it is truthy; a state not created yet counts as not yet."""

        def attempt() -> T | None:
            try:
                return probe(self)
            except StoreError:
                return None

        return eventually(attempt, timeout_s, what)

    def wait_count(self, at_least: int, timeout_s: float = 20, **query: Any) -> int:
        """Block until at least ``at_least`` deliveries match ``query``; return how many do."""
        return self.wait(
            lambda v: (n := v.count(**query)) >= at_least and n,
            timeout_s,
            f"{at_least} deliveries matching {query}",
        )
