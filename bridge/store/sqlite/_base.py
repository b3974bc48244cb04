"""The SQLite store's plumbing: one connection, used from one worker thread.

Every call runs on a single dedicated thread, so the event loop never blocks on disk and writes
are serialised without locks of our own. Opening creates and migrates (the daemon) or attaches
to an existing state at the current schema (the CLI beside a running daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.errors import NoStateError, StoreError
from bridge.models import AttemptResult, Event, SourceState
from bridge.store._rows import event_from_row, source_from_row
from bridge.store.base import SCHEMA_VERSION, Access
from bridge.store.sqlite.schema import MIGRATIONS
from bridge.store.sqlite.thread import StoreThread

if TYPE_CHECKING:
    import sqlite_utils

T = TypeVar("T")


def iso(moment: datetime | None) -> str | None:
    """Stored form of a time: ISO 8601 in UTC."""
    return None if moment is None else moment.astimezone(UTC).isoformat()


def parse_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def row_to_event(row: Mapping[str, Any]) -> Event:
    return event_from_row(row, parse_iso)


def row_to_source(row: Mapping[str, Any]) -> SourceState:
    return source_from_row(row, parse_iso)


class SQLiteBase:
    """The connection, the worker thread and the transactions every role of the store uses."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 5.0,
        access: Access = "daemon",
    ):
        self.location = str(path)
        self.access: Access = access
        self._busy_timeout_s = busy_timeout_s
        self._thread = StoreThread(self.location, self._guarded)
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        """The open database file's (device, inode), to notice it deleted or replaced."""
        self.db: sqlite_utils.Database | None = None
        self._attempts: list[
            tuple[int, datetime, AttemptResult, float | None, asyncio.Future[str]]
        ] = []
        self._attempts_writer: asyncio.Task[None] | None = None
        self._attempt_batch_on: sqlite3.Connection | None = None
        """The connection the attempts' TEMP view and trigger were made on."""

    def _run(self, fn: Callable[..., T], *args: Any) -> Coroutine[Any, Any, T]:
        """Run ``fn(*args)`` on the store's thread, in call order (:class:`StoreThread`)."""
        return self._thread.run(fn, args, first=False)  # (no coroutine of its own: the hot path)

    def _run_first(self, fn: Callable[..., T], *args: Any) -> Coroutine[Any, Any, T]:
        """Like :meth:`_run`, but ahead of the calls waiting for the thread, and handed back
        as soon as it is done rather than with the rest of its hand-over: for a read (and
        write) that others wait for and that no waiting call's outcome can change, such as
        a claim of due deliveries behind a batch of attempts being recorded."""
        return self._thread.run(fn, args, first=True)

    def oldest_call_s(self) -> float:
        """How long the oldest store call still waiting or running has taken (0 if none): a
        stuck disk shows here before anything times out."""
        return self._thread.oldest_call_s()

    async def location_problem(self) -> str | None:
        if self._identity is None:
            return None
        now = _file_identity(Path(self.location))
        if now is None:
            return "the state file was deleted while the daemon was using it"
        if now != self._identity:
            return "the state file was replaced by another file while the daemon was using it"
        return None

    def _guarded(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise StoreError(
                getattr(fn, "__name__", "operation").lstrip("_"),
                _describe(exc),
                location=self.location,
            ) from exc

    @property
    def database(self) -> sqlite_utils.Database:
        """The same connection through sqlite-utils (schema changes and inspection queries).

        Made on first use: the hot path and most CLI verbs never need it, and importing
        sqlite-utils costs ~60 ms of a CLI call's start-up."""
        if self.db is None:
            if self._conn is None:
                raise StoreError("use", "the store is not open", location=self.location)
            import sqlite_utils

            self.db = sqlite_utils.Database(self._conn)
        return self.db

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("use", "the store is not open", location=self.location)
        return self._conn

    async def open(self) -> None:
        self._thread.start()
        try:
            await self._run(self._open)
        except BaseException:
            self._thread.stop(wait=False)
            raise

    def open_sync(self) -> None:
        """Open on the calling thread (for read-only CLI verbs and tests)."""
        try:
            self._open()
        except sqlite3.Error as exc:
            raise StoreError("open", _describe(exc), location=self.location) from exc

    def _open(self) -> None:
        if self.access != "daemon":
            self._attach()
            return
        path = Path(self.location)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # 0600 from the first byte: the state holds API data; SQLite gives -wal/-shm the same mode
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
        except OSError as exc:
            raise StoreError(
                "open", f"cannot create the state file: {exc}", location=self.location
            ) from exc
        conn = sqlite3.connect(
            path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        self._identity = _file_identity(path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn = conn
        self.db = None
        try:
            self._migrate()
        except BaseException:
            self._close()
            raise

    def _attach(self) -> None:
        """Open an existing state beside a possibly running daemon: never create or migrate."""
        path = Path(self.location)
        if not path.exists():
            raise NoStateError(self.location)
        mode = "ro" if self.access == "read" else "rw"
        try:
            conn, version = self._connect(f"{path.absolute().as_uri()}?mode={mode}")
        except sqlite3.OperationalError:
            if self.access != "read" or os.access(path.parent, os.W_OK):
                raise
            # A read-only file system (a stopped service's disk mounted ro, a backup): WAL
            # mode needs a -shm file SQLite cannot create there. Nothing can write to such a
            # file system, so the file is immutable and may be read as such.
            conn, version = self._connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1")
        if version != SCHEMA_VERSION:
            conn.close()
            if version == 0:
                raise NoStateError(self.location)
            newer = version > SCHEMA_VERSION
            raise StoreError(
                "open",
                f"the state file has schema version {version}, this pollbridge reads version "
                f"{SCHEMA_VERSION}; "
                + (
                    "upgrade pollbridge"
                    if newer
                    else "start the daemon once (it upgrades the state), then try again"
                ),
                location=self.location,
            )
        self._conn = conn
        self.db = None

    def _connect(self, uri: str) -> tuple[sqlite3.Connection, int]:
        """Connect to ``uri`` for :meth:`_attach`, and read its schema version."""
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.row_factory = sqlite3.Row
            if self.access == "read":
                conn.execute("PRAGMA query_only = ON")
            else:
                conn.execute("PRAGMA foreign_keys = ON")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except BaseException:
            conn.close()
            raise
        return conn, version

    def _migrate(self) -> None:
        conn = self.conn
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise StoreError(
                "open",
                f"the state file has schema version {current}, newer than this pollbridge "
                f"understands ({SCHEMA_VERSION}); upgrade pollbridge",
                location=self.location,
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                step = MIGRATIONS[version]
                if callable(step):
                    step(self.database)
                else:
                    for statement in step.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise

    async def close(self) -> None:
        if not self._thread.running:
            return
        await self._run(self._close)
        self._thread.stop(wait=True)

    def _close(self) -> None:
        self.db = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close_sync(self) -> None:
        self._close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise

    def _bump_control(self) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('control', '1') ON CONFLICT (key) "
            "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def _touch_listener(self, listener: str, fields: Mapping[str, Any]) -> None:
        cols = list(fields)
        self.conn.execute(
            f"INSERT INTO listeners (name, {', '.join(cols)}) VALUES (?, {', '.join('?' * len(cols))}) "  # noqa: S608
            f"ON CONFLICT (name) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols)}",
            (listener, *fields.values()),
        )


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of ``path``, which every name of one file shares; None if absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back (e.g. on SQLITE_FULL); a second ROLLBACK would raise
    # "no transaction is active" and hide the error that matters.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _describe(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text:
        return f"{text} (another process holds a write lock on the state file)"
    if "full" in text:
        return f"{text} (the disk or the database's size limit is full)"
    return text
