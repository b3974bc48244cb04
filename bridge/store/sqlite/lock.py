"""One daemon per SQLite state: an exclusive lock on the database file itself.

The lock is a ``flock(2)`` on the database file, so every path to that file (the path itself,
a symlink, a hard link, a bind mount) is the same lock: it belongs to the file, not to a name.
On Linux, ``flock`` locks and the POSIX (``fcntl``) locks SQLite takes on the same file do not
interact. The descriptor that holds it must stay open until the store is closed, though:
closing any descriptor of the database file drops this process's POSIX locks on it, SQLite's
included. ``<state>.lock`` beside the path only tells a refused daemon who holds the state.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from bridge.errors import StoreError


def claim_state_lock(path: str) -> int:
    """Hold an exclusive lock on the SQLite database at ``path`` (created, mode 0600, if
    missing) and return its descriptor: closing it releases the lock. A second daemon (or
    ``run --once``) on the same file, by any path, gets a :class:`StoreError` naming the
    first one's pid where it can be told."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # 0600 from the first byte, as the store creates it: the state holds API data
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(
            "open", f"cannot open the state file to lock it: {exc}", location=path
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _in_use(path, _holder(path)) from None
    try:
        _note_holder(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _note_holder(path: str) -> None:
    """Write our pid into ``<state>.lock``; refuse if a pollbridge older than this lock (which
    locked only that file) still holds it."""
    note = f"{path}.lock"
    try:
        fd = os.open(note, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return  # only a courtesy for the message of a refused daemon
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(path, _read_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    finally:
        os.close(fd)


def _holder(path: str) -> str:
    """The pid the lock holder noted, through this path or the file's real one ('' if unknown:
    e.g. it came in through a hard link)."""
    for note in dict.fromkeys((f"{path}.lock", f"{os.path.realpath(path)}.lock")):
        with contextlib.suppress(OSError):
            fd = os.open(note, os.O_RDONLY)
            try:
                pid = _read_pid(fd)
            finally:
                os.close(fd)
            if pid:
                return pid
    return ""


def _read_pid(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else ""


def _in_use(path: str, holder: str) -> StoreError:
    return StoreError(
        "open",
        f"another pollbridge daemon{f' (pid {holder})' if holder else ''} is "
        "using this state, and only one may (`pollbridge status` shows it; several "
        "instances need a PostgreSQL state, docs/scaling.md)",
        location=path,
    )
