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
    PollCommit,
    PruneResult,
    ReplayRequest,
    ReplayResult,
    SnapshotHashes,
    StaleSnapshot,
    Store,
)


def create_store(location: str, *, access: Access = "daemon") -> Store:
    """The store for ``location``: a file path (SQLite) or a ``postgresql://`` URL.

    ``access`` is ``"daemon"`` for the daemon (creates and migrates), ``"read"`` or ``"write"``
    for the CLI beside a running daemon (the state must exist; nothing is created or migrated).
    """
    if location.startswith(("postgresql://", "postgres://")):
        raise StoreError(
            "open", "the PostgreSQL backend is not available in this version", location="postgresql"
        )
    from bridge.store.sqlite import SQLiteStore

    return SQLiteStore(location, access=access)


__all__ = [
    "Access",
    "AttemptInfo",
    "DeliveryInfo",
    "DeliveryQuery",
    "EventQuery",
    "EventRecord",
    "PollCommit",
    "PruneResult",
    "ReplayRequest",
    "ReplayResult",
    "SnapshotHashes",
    "StaleSnapshot",
    "Store",
    "create_store",
]
