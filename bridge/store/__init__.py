"""State storage behind one interface; :func:`open_store` picks the backend from the location."""

from __future__ import annotations

from bridge.errors import StoreError
from bridge.store.base import PollCommit, SnapshotHashes, StaleSnapshot, Store


def create_store(location: str) -> Store:
    """The store for ``location``: a file path (SQLite) or a ``postgresql://`` URL."""
    if location.startswith(("postgresql://", "postgres://")):
        raise StoreError(
            "open", "the PostgreSQL backend is not available in this version", location="postgresql"
        )
    from bridge.store.sqlite import SQLiteStore

    return SQLiteStore(location)


__all__ = ["PollCommit", "SnapshotHashes", "StaleSnapshot", "Store", "create_store"]
