"""One daemon per SQLite state: the lock itself lives with the SQLite store
(:mod:`bridge.store.sqlite.lock`, on the database file, whatever path names it)."""

from __future__ import annotations

import os

from bridge.store import claim_state_lock as claim_sqlite_state


def release_sqlite_state(lock: int | None) -> None:
    """Give the lock up (closing the descriptor drops the flock)."""
    if lock is not None:
        os.close(lock)


__all__ = ["claim_sqlite_state", "release_sqlite_state"]
