"""One daemon per SQLite state: an exclusive lock held for as long as the daemon runs."""

from __future__ import annotations

import fcntl
import os

from bridge.errors import StoreError
from bridge.store import is_postgres_url


def claim_sqlite_state(location: str) -> int | None:
    """Hold an exclusive lock on ``<state>.lock`` for as long as this daemon runs, so a second
    daemon (or ``run --once``) on the same SQLite state is refused instead of polling and
    delivering everything a second time. None for PostgreSQL, where instances share work.

    The lock is on a file of its own: closing any descriptor of the database file would drop
    SQLite's own POSIX locks on it."""
    if is_postgres_url(location):
        return None
    path = f"{location}.lock"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(
            "open", f"cannot create the state's lock file: {exc}", location=location
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise StoreError(
            "open",
            f"another pollbridge daemon{f' (pid {holder})' if holder.isdigit() else ''} is "
            "using this state, and only one may (`pollbridge status` shows it; several "
            "instances need a PostgreSQL state, docs/scaling.md)",
            location=location,
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_sqlite_state(lock: int | None) -> None:
    """Give the lock up (closing the descriptor drops the flock)."""
    if lock is not None:
        os.close(lock)
