"""Copying a state from one backend into another (``pollbridge migrate-state``)."""

from __future__ import annotations

import os
from pathlib import Path


async def copy_sqlite_into_postgres(path: Path, url: str) -> tuple[str, dict[str, int]]:
    """Copy the SQLite state at ``path`` into the empty PostgreSQL database at ``url``;
    return the target's location and the rows copied per table.

    The SQLite file's one-daemon lock is held meanwhile: a daemon still running on it would go
    on committing polls that are not copied."""
    from bridge.store import claim_state_lock
    from bridge.store.postgres import PostgresStore
    from bridge.store.sqlite import SQLiteStore

    lock = claim_state_lock(str(path))
    try:
        lite = SQLiteStore(path)
        lite.open_sync()  # brings an older state file to the current schema first, as `run` would
        target = PostgresStore(url)
        try:
            await target.open()
            counts = await target.import_sqlite(lite.conn)
        finally:
            lite.close_sync()
            await target.close()
    finally:
        if lock is not None:
            os.close(lock)
    return target.location, counts
