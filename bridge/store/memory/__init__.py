"""An in-memory store (``memory:``): the whole interface over plain dicts, for tests and dry runs.

It keeps the SQL backends' semantics, checked by the same contract suite: one commit is all or
nothing, stale snapshots are refused, deliveries leave in per-key order, claims are durable,
coalescing, replay and retention behave alike. Values are copied in and out as JSON, as a
database would, so a caller mutating what it got back changes nothing stored. Like SQLite it
serves a single instance, so it owns every lease. Nothing outlives the process.
"""

from __future__ import annotations

from bridge.store.memory.inspection import MemoryInspection
from bridge.store.memory.queue import MemoryQueue
from bridge.store.memory.snapshots import MemorySnapshots


class MemoryStore(MemorySnapshots, MemoryQueue, MemoryInspection):
    """The in-memory backend of :class:`bridge.store.base.Store`."""


__all__ = ["MemoryStore"]
