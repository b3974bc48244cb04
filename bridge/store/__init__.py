"""State storage behind small role interfaces; :func:`open_store` is the one place that picks a
backend from a location: a file path (SQLite), a ``postgresql://`` URL, or ``memory:``."""

from __future__ import annotations

from typing import Literal

from bridge.errors import LeaseLost, StaleSnapshot, StoreError
from bridge.store.base import (
    Access,
    AttemptInfo,
    AttemptRecord,
    Coordination,
    DeliveryInfo,
    DeliveryQuery,
    DeliveryQueue,
    EventQuery,
    EventRecord,
    Heartbeat,
    Inspection,
    InstanceInfo,
    InstanceStatus,
    LeaseInfo,
    Operations,
    OwnersReport,
    PollCommit,
    PruneResult,
    ReplayRequest,
    ReplayResult,
    SeenKeys,
    SeenUpdate,
    SnapshotHashes,
    SnapshotStore,
    Store,
    TrackedCounts,
)

Backend = Literal["sqlite", "postgres", "memory"]

MEMORY = "memory:"
"""The location of an in-memory store (tests, dry runs): nothing outlives the process."""


def backend_of(location: str) -> Backend:
    """Which backend serves ``location``."""
    if location.startswith(("postgresql://", "postgres://")):
        return "postgres"
    if location == MEMORY or location.startswith(MEMORY):
        return "memory"
    return "sqlite"


def is_postgres_url(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a SQLite file."""
    return backend_of(location) == "postgres"


def is_state_file(location: str) -> bool:
    """Whether ``location`` is a path on this machine (the SQLite file), not a URL."""
    return backend_of(location) == "sqlite"


def is_shared(location: str) -> bool:
    """Whether several pollbridge instances may share the store at ``location`` (they then
    coordinate through it: leases, claims); otherwise one process owns everything in it."""
    return backend_of(location) == "postgres"


def open_store(location: str, *, access: Access = "daemon") -> Store:
    """The store for ``location``, not yet opened (``await store.open()``).

    ``access`` is ``"daemon"`` for the daemon (creates and migrates), ``"read"`` or ``"write"``
    for the CLI beside a running daemon (the state must exist; nothing is created or migrated).
    """
    backend = backend_of(location)
    if backend == "postgres":
        try:
            from bridge.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                "open",
                f"the PostgreSQL backend needs psycopg 3 and psycopg-pool ({exc}); "
                "install them with: pip install 'psycopg[binary]' psycopg-pool",
                location="postgresql",
            ) from exc
        return PostgresStore(location, access=access)
    if backend == "memory":
        from bridge.store.memory import MemoryStore

        return MemoryStore(access=access)
    from bridge.store.sqlite import SQLiteStore

    return SQLiteStore(location, access=access)


create_store = open_store
"""The former name of :func:`open_store`."""


def claim_state_lock(location: str) -> int | None:
    """Hold the one-daemon lock on the state at ``location`` while this process runs; the
    descriptor to close when the store is closed. None where no such lock applies: PostgreSQL,
    where instances share the work, and memory, which no other process can see."""
    if not is_state_file(location):
        return None
    from bridge.store.sqlite.lock import claim_state_lock as claim_file

    return claim_file(location)


__all__ = [
    "MEMORY",
    "Access",
    "AttemptInfo",
    "AttemptRecord",
    "Backend",
    "Coordination",
    "DeliveryInfo",
    "DeliveryQuery",
    "DeliveryQueue",
    "EventQuery",
    "EventRecord",
    "Heartbeat",
    "Inspection",
    "InstanceInfo",
    "InstanceStatus",
    "LeaseInfo",
    "LeaseLost",
    "Operations",
    "OwnersReport",
    "PollCommit",
    "PruneResult",
    "ReplayRequest",
    "ReplayResult",
    "SeenKeys",
    "SeenUpdate",
    "SnapshotHashes",
    "SnapshotStore",
    "StaleSnapshot",
    "Store",
    "TrackedCounts",
    "backend_of",
    "claim_state_lock",
    "create_store",
    "is_postgres_url",
    "is_shared",
    "is_state_file",
    "open_store",
]
