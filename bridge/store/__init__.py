"""State storage behind one interface; :func:`create_store` picks the backend from the location."""

from __future__ import annotations

from bridge.errors import StoreError
from bridge.store.base import (
    Access,
    AttemptInfo,
    DeliveryInfo,
    DeliveryQuery,
    EventQuery,
    EventRecord,
    Heartbeat,
    InstanceInfo,
    InstanceStatus,
    LeaseLost,
    OwnersReport,
    PollCommit,
    PruneResult,
    ReplayRequest,
    ReplayResult,
    SnapshotHashes,
    StaleSnapshot,
    Store,
)


def is_postgres_url(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a SQLite file."""
    return location.startswith(("postgresql://", "postgres://"))


def create_store(location: str, *, access: Access = "daemon") -> Store:
    """The store for ``location``: a file path (SQLite) or a ``postgresql://`` URL.

    ``access`` is ``"daemon"`` for the daemon (creates and migrates), ``"read"`` or ``"write"``
    for the CLI beside a running daemon (the state must exist; nothing is created or migrated).
    """
    if is_postgres_url(location):
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
    from bridge.store.sqlite import SQLiteStore

    return SQLiteStore(location, access=access)


__all__ = [
    "Access",
    "AttemptInfo",
    "DeliveryInfo",
    "DeliveryQuery",
    "EventQuery",
    "EventRecord",
    "Heartbeat",
    "InstanceInfo",
    "InstanceStatus",
    "LeaseLost",
    "OwnersReport",
    "PollCommit",
    "PruneResult",
    "ReplayRequest",
    "ReplayResult",
    "SnapshotHashes",
    "StaleSnapshot",
    "Store",
    "create_store",
    "is_postgres_url",
]
