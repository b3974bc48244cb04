"""The embedded default store: one SQLite file in WAL mode, used from one worker thread.

Every call runs on a single dedicated thread, so the event loop never blocks on disk and writes
are serialised without locks of our own. Each poll is one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import sqlite_utils

from bridge.core import source_state
from bridge.core.queue_rules import QueuedEntry, coalescible_tail, state_after_attempt
from bridge.errors import NoStateError, StaleSnapshot, StoreError
from bridge.models import (
    AttemptResult,
    Delivery,
    Event,
    ItemKey,
    ListenerState,
    SourceState,
)
from bridge.store._rows import (
    SOURCE_FIELDS,
    Filter,
    delivery_filters,
    delivery_info_from_row,
    dumps,
    event_filters,
    event_from_row,
    key_from_json,
    listener_states,
    source_from_row,
)
from bridge.store.base import (
    SCHEMA_VERSION,
    Access,
    AttemptInfo,
    DeliveryInfo,
    DeliveryQuery,
    EventQuery,
    EventRecord,
    Heartbeat,
    InstanceInfo,
    MergeUpdates,
    OwnersReport,
    PollCommit,
    PruneResult,
    ReplayRequest,
    ReplayResult,
    SnapshotHashes,
)

T = TypeVar("T")


def _add_claimed_at(db: sqlite_utils.Database) -> None:
    db.table("deliveries").add_column("claimed_at", str)


_MIGRATIONS: dict[int, str | Callable[[sqlite_utils.Database], None]] = {
    1: """
    CREATE TABLE sources (
        name TEXT PRIMARY KEY,
        last_poll_at TEXT,
        last_success_at TEXT,
        last_result TEXT,
        last_error TEXT,
        last_duration_s REAL,
        item_count INTEGER NOT NULL DEFAULT 0,
        fingerprint TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        not_before TEXT,
        held_reason TEXT,
        held_polls INTEGER NOT NULL DEFAULT 0,
        held_digest TEXT,
        validators TEXT,
        snapshot_version INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE items (
        source TEXT NOT NULL,
        key_text TEXT NOT NULL,
        key TEXT NOT NULL,
        hash TEXT NOT NULL,
        item TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (source, key_text)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        key_text TEXT NOT NULL,
        key TEXT NOT NULL,
        type TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        before TEXT,
        after TEXT,
        changes TEXT NOT NULL
    );
    CREATE INDEX events_source_key ON events (source, key_text, seq);
    CREATE INDEX events_timestamp ON events (timestamp);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        event_seq INTEGER NOT NULL REFERENCES events (seq),
        listener TEXT NOT NULL,
        source TEXT NOT NULL,
        key_text TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        delivered_at TEXT,
        last_status INTEGER,
        last_error TEXT,
        last_response TEXT
    );
    CREATE INDEX deliveries_due ON deliveries (listener, next_at) WHERE state = 'pending';
    CREATE INDEX deliveries_order ON deliveries (listener, source, key_text, event_seq)
        WHERE state = 'pending';
    CREATE INDEX deliveries_event ON deliveries (event_seq);
    CREATE INDEX deliveries_state ON deliveries (listener, state);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
        at TEXT NOT NULL,
        status INTEGER,
        duration_ms REAL NOT NULL,
        error TEXT,
        response TEXT
    );
    CREATE INDEX attempts_delivery ON attempts (delivery_id);
    CREATE TABLE listeners (
        name TEXT PRIMARY KEY,
        paused INTEGER NOT NULL DEFAULT 0,
        paused_reason TEXT,
        paused_at TEXT,
        last_success_at TEXT,
        last_failure_at TEXT,
        last_error TEXT
    );
    """,
    # `pollbridge accept NAME`: apply a held poll's result at the source's next poll
    2: """
    ALTER TABLE sources ADD COLUMN accept_requested INTEGER NOT NULL DEFAULT 0;
    """,
    # listeners: disable_after counts from failing_since; coalesced deliveries name their successor
    3: """
    ALTER TABLE listeners ADD COLUMN failing_since TEXT;
    ALTER TABLE deliveries ADD COLUMN coalesced_into INTEGER
    """,
    # the daemon's runtime status and the operators' control counter; retention's index
    4: """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE INDEX deliveries_finished ON deliveries (updated_at) WHERE state != 'pending';
    CREATE INDEX deliveries_dead ON deliveries (listener) WHERE state = 'dead';
    """,
    # claims are durable: when a delivery was first claimed for sending, so that a send cut
    # short by a crash (attempts still 0) is never coalesced away
    5: _add_claimed_at,
}
assert max(_MIGRATIONS) == SCHEMA_VERSION  # noqa: S101 - a programming error, caught by any test

_STATE_INDEX = {
    "pending": "deliveries_due",
    "dead": "deliveries_dead",
    "delivered": "deliveries_state",
}
"""The index that counts each delivery state without reading the others."""


def iso(moment: datetime | None) -> str | None:
    """Stored form of a time: ISO 8601 in UTC."""
    return None if moment is None else moment.astimezone(UTC).isoformat()


def parse_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def row_to_event(row: Mapping[str, Any]) -> Event:
    return event_from_row(row, parse_iso)


def _row_to_source(row: Mapping[str, Any]) -> SourceState:
    return source_from_row(row, parse_iso)


class SQLiteStore:
    """The SQLite backend of :class:`bridge.store.base.Store`."""

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
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self.db: sqlite_utils.Database | None = None
        self._attempts: list[
            tuple[int, datetime, AttemptResult, float | None, asyncio.Future[str]]
        ] = []
        self._attempts_writer: asyncio.Task[None] | None = None

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError("use", "the store is not open", location=self.location)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, fn, args)

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
        """The same connection through sqlite-utils (schema changes and inspection queries)."""
        if self.db is None:
            raise StoreError("use", "the store is not open", location=self.location)
        return self.db

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("use", "the store is not open", location=self.location)
        return self._conn

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pollbridge-sqlite")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
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
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn = conn
        self.db = sqlite_utils.Database(conn)
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
        uri = f"{path.absolute().as_uri()}?mode={mode}"
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
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except BaseException:
            conn.close()
            raise
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
        self.db = sqlite_utils.Database(conn)

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
                step = _MIGRATIONS[version]
                if callable(step):
                    step(self.database)
                else:
                    for statement in step.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close_sync(self) -> None:
        self._close()

    # -- sources ----------------------------------------------------------------------------

    async def get_source_state(self, source: str) -> SourceState | None:
        return await self._run(self._get_source_state, source)

    def _get_source_state(self, source: str) -> SourceState | None:
        row = self.conn.execute("SELECT * FROM sources WHERE name = ?", (source,)).fetchone()
        return None if row is None else _row_to_source(row)

    async def list_source_states(self) -> list[SourceState]:
        return await self._run(self._list_source_states)

    def _list_source_states(self) -> list[SourceState]:
        rows = self.conn.execute("SELECT * FROM sources ORDER BY name").fetchall()
        return [_row_to_source(r) for r in rows]

    async def load_hashes(self, source: str) -> SnapshotHashes:
        return await self._run(self._load_hashes, source)

    def _load_hashes(self, source: str) -> SnapshotHashes:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            row = conn.execute(
                "SELECT snapshot_version FROM sources WHERE name = ?", (source,)
            ).fetchone()
            hashes = dict(
                conn.execute("SELECT key_text, hash FROM items WHERE source = ?", (source,))
            )
        finally:
            conn.execute("COMMIT")
        return SnapshotHashes(row[0] if row else 0, hashes)

    async def snapshot_version(self, source: str) -> int:
        return await self._run(self._snapshot_version, source)

    def _snapshot_version(self, source: str) -> int:
        row = self.conn.execute(
            "SELECT snapshot_version FROM sources WHERE name = ?", (source,)
        ).fetchone()
        return int(row[0]) if row else 0

    async def load_items(
        self, source: str, key_texts: Sequence[str]
    ) -> dict[str, tuple[ItemKey, Any]]:
        return await self._run(self._load_items, source, list(key_texts))

    def _load_items(self, source: str, key_texts: list[str]) -> dict[str, tuple[ItemKey, Any]]:
        out: dict[str, tuple[ItemKey, Any]] = {}
        for start in range(0, len(key_texts), 500):
            chunk = key_texts[start : start + 500]
            rows = self.conn.execute(
                "SELECT key_text, key, item FROM items WHERE source = ? AND key_text IN "
                "(SELECT value FROM json_each(?))",
                (source, dumps(chunk)),
            )
            for key_text, key, item in rows:
                out[key_text] = (key_from_json(key), orjson.loads(item))
        return out

    async def commit_poll(self, commit: PollCommit) -> list[Event]:
        return await self._run(self._commit_poll, commit)

    def _commit_poll(self, commit: PollCommit) -> list[Event]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._snapshot_version(commit.source)
            if commit.expected_version is not None and version != commit.expected_version:
                raise StaleSnapshot(
                    commit.source,
                    f"snapshot of {commit.source!r} moved from version "
                    f"{commit.expected_version} to {version} during the poll",
                )
            self._write_items(commit)
            events = self._write_events(commit)
            self._write_deliveries(commit, events)
            self._write_source_state(commit, version + 1)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return events

    def _write_items(self, commit: PollCommit) -> None:
        now = iso(commit.polled_at)
        if commit.upserts:
            self.conn.executemany(
                "INSERT INTO items (source, key_text, key, hash, item, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, key_text) DO UPDATE SET "
                "key = excluded.key, hash = excluded.hash, item = excluded.item, "
                "updated_at = excluded.updated_at",
                (
                    (
                        commit.source,
                        it.key_text,
                        dumps(it.key if isinstance(it.key, str) else list(it.key)),
                        it.hash,
                        dumps(it.value),
                        now,
                    )
                    for it in commit.upserts
                ),
            )
        if commit.deletes:
            self.conn.executemany(
                "DELETE FROM items WHERE source = ? AND key_text = ?",
                ((commit.source, k) for k in commit.deletes),
            )

    def _write_events(self, commit: PollCommit) -> list[Event]:
        from bridge.core.ids import new_event_id

        events: list[Event] = []
        ts = iso(commit.polled_at)
        cur = self.conn.cursor()
        for change in commit.changes:
            event_id = new_event_id(commit.polled_at)
            key_json = dumps(change.key if isinstance(change.key, str) else list(change.key))
            cur.execute(
                "INSERT INTO events (id, source, key_text, key, type, timestamp, before, after, "
                "changes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    commit.source,
                    change.key_text,
                    key_json,
                    change.type,
                    ts,
                    None if change.before is None else dumps(change.before),
                    None if change.after is None else dumps(change.after),
                    dumps(change.changes),
                ),
            )
            seq = cur.lastrowid
            assert seq is not None  # noqa: S101
            events.append(
                Event(
                    event_id,
                    seq,
                    commit.source,
                    change.key,
                    change.type,
                    commit.polled_at,
                    change.before,
                    change.after,
                    change.changes,
                )
            )
        return events

    def _write_deliveries(self, commit: PollCommit, events: list[Event]) -> None:
        now = iso(commit.polled_at)
        due = commit.polled_at.timestamp()
        rows = [
            (event.seq, listener, commit.source, change.key_text, due, now, now)
            for event, change, listeners in zip(events, commit.changes, commit.routes, strict=True)
            for listener in listeners
        ]
        if rows:
            self.conn.executemany(
                "INSERT INTO deliveries (event_seq, listener, source, key_text, next_at, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def _write_source_state(self, commit: PollCommit, version: int) -> None:
        fields = source_state.after_commit(
            polled_at=commit.polled_at,
            duration_s=commit.duration_s,
            result=commit.result,
            item_count=commit.item_count,
            fingerprint=commit.fingerprint,
            snapshot_version=version,
            validators=commit.validators,
        )
        self._upsert_source(commit.source, _stored_source_fields(fields))

    def _upsert_source(self, source: str, fields: Mapping[str, Any]) -> None:
        cols = list(fields)
        assignments = ", ".join(f"{c} = excluded.{c}" for c in cols)
        self.conn.execute(
            f"INSERT INTO sources (name, {', '.join(cols)}) VALUES (?, {', '.join('?' * len(cols))}) "  # noqa: S608
            f"ON CONFLICT (name) DO UPDATE SET {assignments}",
            (source, *fields.values()),
        )

    async def record_poll_failure(
        self,
        source: str,
        at: datetime,
        duration_s: float,
        error: str,
        *,
        result: str = "error",
        not_before: datetime | None = None,
    ) -> SourceState:
        return await self._run(
            self._record_poll_failure, source, at, duration_s, error, result, not_before
        )

    def _record_poll_failure(
        self,
        source: str,
        at: datetime,
        duration_s: float,
        error: str,
        result: str,
        not_before: datetime | None,
    ) -> SourceState:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT consecutive_failures FROM sources WHERE name = ?", (source,)
            ).fetchone()
            fields = source_state.after_failure(
                previous_failures=row[0] if row else 0,
                at=at,
                duration_s=duration_s,
                error=error,
                result=result,
                not_before=not_before,
            )
            self._upsert_source(source, _stored_source_fields(fields))
            state = self._get_source_state(source)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        assert state is not None  # noqa: S101
        return state

    async def record_poll_unchanged(
        self,
        source: str,
        at: datetime,
        duration_s: float,
        *,
        result: str = "ok",
        validators: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        fields = source_state.after_unchanged(
            at=at, duration_s=duration_s, result=result, validators=validators
        )
        await self._run(self._upsert_source, source, _stored_source_fields(fields))

    async def update_source_state(self, source: str, **fields: Any) -> None:
        unknown = set(fields) - set(SOURCE_FIELDS)
        if unknown:
            raise ValueError(f"unknown source state fields: {sorted(unknown)}")
        await self._run(self._upsert_source, source, _stored_source_fields(fields))

    # -- deliveries -------------------------------------------------------------------------

    async def due_deliveries(
        self, listener: str, now: float, limit: int, exclude_ids: Sequence[int]
    ) -> list[Delivery]:
        return await self._run(self._due_deliveries, listener, now, limit, list(exclude_ids))

    def _due_deliveries(
        self, listener: str, now: float, limit: int, exclude_ids: list[int]
    ) -> list[Delivery]:
        # The head of each (listener, source, key) chain only: per-key order.
        rows = self.conn.execute(
            """
            SELECT d.id AS delivery_id, d.listener, d.attempts, d.next_at, e.*
            FROM deliveries d JOIN events e ON e.seq = d.event_seq
            WHERE d.listener = :listener AND d.state = 'pending' AND d.next_at <= :now
              AND d.id NOT IN (SELECT value FROM json_each(:exclude))
              AND NOT EXISTS (
                SELECT 1 FROM deliveries p
                WHERE p.listener = d.listener AND p.source = d.source
                  AND p.key_text = d.key_text AND p.state = 'pending'
                  AND p.event_seq < d.event_seq)
            ORDER BY d.next_at, d.id
            LIMIT :limit
            """,
            {"listener": listener, "now": now, "limit": limit, "exclude": dumps(exclude_ids)},
        ).fetchall()
        return [
            Delivery(r["delivery_id"], r["listener"], row_to_event(r), r["attempts"], r["next_at"])
            for r in rows
        ]

    async def next_due_at(
        self, listeners: Sequence[str], exclude_ids: Sequence[int]
    ) -> float | None:
        return await self._run(self._next_due_at, list(listeners), list(exclude_ids))

    def _next_due_at(self, listeners: list[str], exclude_ids: list[int]) -> float | None:
        row = self.conn.execute(
            """
            SELECT MIN(d.next_at) FROM deliveries d
            WHERE d.state = 'pending' AND d.listener IN (SELECT value FROM json_each(:listeners))
              AND d.id NOT IN (SELECT value FROM json_each(:exclude))
              AND NOT EXISTS (
                SELECT 1 FROM deliveries p
                WHERE p.listener = d.listener AND p.source = d.source
                  AND p.key_text = d.key_text AND p.state = 'pending'
                  AND p.event_seq < d.event_seq)
            """,
            {"listeners": dumps(listeners), "exclude": dumps(exclude_ids)},
        ).fetchone()
        return None if row[0] is None else float(row[0])

    async def record_attempt(
        self, delivery_id: int, at: datetime, result: AttemptResult, *, next_at: float | None
    ) -> str:
        # Group commit: attempts that finish while a write is running are recorded together in
        # the next transaction, instead of one transaction each; every attempt ends exactly as
        # if recorded alone.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        self._attempts.append((delivery_id, at, result, next_at, done))
        if self._attempts_writer is None or self._attempts_writer.done():
            self._attempts_writer = loop.create_task(self._write_attempts())
        return await done

    async def _write_attempts(self) -> None:
        while self._attempts:
            batch, self._attempts = self._attempts, []
            try:
                states = await self._run(self._record_attempts, [a[:4] for a in batch])
            except asyncio.CancelledError:
                for *_, done in batch:
                    done.cancel()
                raise
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][4], exc)
                    continue
                # one bad attempt must not fail the others: record each on its own
                for *attempt, done in batch:
                    try:
                        (state,) = await self._run(self._record_attempts, [tuple(attempt)])
                    except Exception as single_exc:
                        _settle(done, single_exc)
                    else:
                        _settle(done, state)
                continue
            for (*_, done), state in zip(batch, states, strict=True):
                _settle(done, state)

    def _record_attempts(
        self, batch: list[tuple[int, datetime, AttemptResult, float | None]]
    ) -> list[str]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            states = [self._record_attempt(*attempt) for attempt in batch]
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return states

    def _record_attempt(
        self, delivery_id: int, at: datetime, result: AttemptResult, next_at: float | None
    ) -> str:
        conn = self.conn
        state = state_after_attempt(result, next_at)
        now = iso(at)
        conn.execute(
            "INSERT INTO attempts (delivery_id, at, status, duration_ms, error, response) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                delivery_id,
                now,
                result.status,
                result.duration_s * 1000,
                result.error,
                result.response_excerpt,
            ),
        )
        conn.execute(
            "UPDATE deliveries SET state = ?, attempts = attempts + 1, next_at = ?, "
            "updated_at = ?, delivered_at = ?, last_status = ?, last_error = ?, "
            "last_response = ? WHERE id = ?",
            (
                state,
                next_at if next_at is not None else at.timestamp(),
                now,
                now if result.ok else None,
                result.status,
                result.error,
                result.response_excerpt,
                delivery_id,
            ),
        )
        listener = conn.execute(
            "SELECT listener FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()[0]
        if result.ok:
            self._touch_listener(listener, {"last_success_at": now, "failing_since": None})
        else:
            self._touch_listener(listener, {"last_failure_at": now, "last_error": result.error})
            if result.sent:
                conn.execute(
                    "UPDATE listeners SET failing_since = COALESCE(failing_since, ?) "
                    "WHERE name = ?",
                    (now, listener),
                )
        return state

    def _touch_listener(self, listener: str, fields: Mapping[str, Any]) -> None:
        cols = list(fields)
        self.conn.execute(
            f"INSERT INTO listeners (name, {', '.join(cols)}) VALUES (?, {', '.join('?' * len(cols))}) "  # noqa: S608
            f"ON CONFLICT (name) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols)}",
            (listener, *fields.values()),
        )

    async def pending_count(self, listeners: Sequence[str] | None = None) -> int:
        return await self._run(self._pending_count, None if listeners is None else list(listeners))

    def _pending_count(self, listeners: list[str] | None) -> int:
        if listeners is None:
            row = self.conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
        else:
            row = self.conn.execute(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND listener IN "
                "(SELECT value FROM json_each(?))",
                (dumps(listeners),),
            )
        return int(row.fetchone()[0])

    async def coalesce_pending(
        self, listener: str, at: datetime, exclude_ids: Sequence[int], merge: MergeUpdates
    ) -> int:
        return await self._run(self._coalesce_pending, listener, at, list(exclude_ids), merge)

    def _coalesce_pending(
        self, listener: str, at: datetime, exclude_ids: list[int], merge: MergeUpdates
    ) -> int:
        conn = self.conn
        excluded = set(exclude_ids)
        conn.execute("BEGIN IMMEDIATE")
        try:
            keys = conn.execute(
                """
                SELECT source, key_text FROM deliveries
                WHERE listener = :listener AND state = 'pending' AND attempts = 0
                  AND claimed_at IS NULL AND id NOT IN (SELECT value FROM json_each(:exclude))
                GROUP BY source, key_text HAVING COUNT(*) >= 2
                """,
                {"listener": listener, "exclude": dumps(exclude_ids)},
            ).fetchall()
            merged = 0
            for source, key_text in keys:
                merged += self._coalesce_key(listener, source, key_text, at, excluded, merge)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return merged

    def _coalesce_key(
        self,
        listener: str,
        source: str,
        key_text: str,
        at: datetime,
        excluded: set[int],
        merge: MergeUpdates,
    ) -> int:
        from bridge.core.ids import new_event_id

        chain = self.conn.execute(
            """
            SELECT d.id AS delivery_id, d.attempts, d.next_at, d.claimed_at, e.*
            FROM deliveries d JOIN events e ON e.seq = d.event_seq
            WHERE d.listener = ? AND d.source = ? AND d.key_text = ? AND d.state = 'pending'
            ORDER BY d.event_seq
            """,
            (listener, source, key_text),
        ).fetchall()
        run = coalescible_tail(chain, _queued_entry, excluded)
        if not run:
            return 0
        events = [row_to_event(r) for r in run]
        changes = merge(events)
        now = iso(at)
        into: int | None = None
        if changes is not None:
            cur = self.conn.execute(
                "INSERT INTO events (id, source, key_text, key, type, timestamp, before, after, "
                "changes) VALUES (?, ?, ?, ?, 'updated', ?, ?, ?, ?)",
                (
                    new_event_id(events[-1].timestamp),
                    source,
                    key_text,
                    run[-1]["key"],
                    run[-1]["timestamp"],
                    run[0]["before"],
                    run[-1]["after"],
                    dumps(changes),
                ),
            )
            cur = self.conn.execute(
                "INSERT INTO deliveries (event_seq, listener, source, key_text, next_at, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    cur.lastrowid,
                    listener,
                    source,
                    key_text,
                    min(r["next_at"] for r in run),
                    now,
                    now,
                ),
            )
            into = cur.lastrowid
        self.conn.execute(
            "UPDATE deliveries SET state = 'coalesced', coalesced_into = ?, updated_at = ? "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (into, now, dumps([r["delivery_id"] for r in run])),
        )
        return len(run) - (0 if into is None else 1)

    # -- listeners --------------------------------------------------------------------------

    async def set_listener_paused(
        self, listener: str, paused: bool, reason: str | None, at: datetime
    ) -> None:
        await self._run(self._set_listener_paused, listener, paused, reason, at)

    def _set_listener_paused(
        self, listener: str, paused: bool, reason: str | None, at: datetime
    ) -> None:
        with self._transaction():
            self._touch_listener(
                listener,
                {
                    "paused": int(paused),
                    "paused_reason": reason,
                    "paused_at": iso(at) if paused else None,
                    # a resumed listener gets a fresh disable_after window
                    **({} if paused else {"failing_since": None}),
                },
            )
            if not paused:
                # what waited for the listener goes now, not at its next scheduled retry
                self.conn.execute(
                    "UPDATE deliveries SET next_at = MIN(next_at, ?) "
                    "WHERE listener = ? AND state = 'pending'",
                    (at.timestamp(), listener),
                )
            self._bump_control()

    async def list_listener_states(self) -> list[ListenerState]:
        return await self._run(self._list_listener_states)

    def _list_listener_states(self) -> list[ListenerState]:
        counts: dict[str, dict[str, int]] = {}
        for listener, state, n in self.conn.execute(
            "SELECT listener, state, COUNT(*) FROM deliveries GROUP BY listener, state"
        ):
            counts.setdefault(listener, {})[state] = n
        rows = {r["name"]: r for r in self.conn.execute("SELECT * FROM listeners")}
        return listener_states(counts, rows, parse_iso)

    # -- runtime status and control -----------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _bump_control(self) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('control', '1') ON CONFLICT (key) "
            "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    async def write_runtime(self, status: Mapping[str, Any]) -> None:
        await self._run(self._write_runtime, dumps(dict(status)))

    def _write_runtime(self, text: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('runtime', ?) ON CONFLICT (key) "
            "DO UPDATE SET value = excluded.value",
            (text,),
        )

    async def read_runtime(self) -> dict[str, Any] | None:
        return await self._run(self._read_runtime)

    def _read_runtime(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'runtime'").fetchone()
        value = None if row is None else orjson.loads(row[0])
        return value if isinstance(value, dict) else None

    async def control_version(self) -> int:
        return await self._run(self._control_version)

    def _control_version(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'control'").fetchone()
        return 0 if row is None else int(row[0])

    # -- inspection -------------------------------------------------------------------------

    async def list_events(self, query: EventQuery) -> list[EventRecord]:
        return await self._run(self._list_events, query)

    def _list_events(self, query: EventQuery) -> list[EventRecord]:
        where, params = _where(event_filters(query), query.limit)
        rows = self.conn.execute(
            "SELECT e.*, (SELECT json_group_object(d.listener, d.state) FROM deliveries d "  # noqa: S608 - fixed clauses, values bound
            "WHERE d.event_seq = e.seq) AS delivery_states "
            f"FROM events e WHERE {where} ORDER BY e.seq DESC LIMIT :limit",
            params,
        ).fetchall()
        return [
            EventRecord(row_to_event(r), orjson.loads(r["delivery_states"] or "{}"))
            for r in reversed(rows)
        ]

    async def get_event(self, event_id: str) -> Event | None:
        return await self._run(self._get_event, event_id)

    def _get_event(self, event_id: str) -> Event | None:
        row = self.conn.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else row_to_event(row)

    async def list_deliveries(self, query: DeliveryQuery) -> list[DeliveryInfo]:
        return await self._run(self._list_deliveries, query)

    def _list_deliveries(self, query: DeliveryQuery) -> list[DeliveryInfo]:
        where, params = _where(delivery_filters(query), query.limit)
        rows = self.conn.execute(
            "SELECT d.*, e.id AS event_id, e.type FROM deliveries d "  # noqa: S608 - fixed clauses, values bound
            "JOIN events e ON e.seq = d.event_seq "
            f"WHERE {where} ORDER BY d.id DESC LIMIT :limit",
            params,
        ).fetchall()
        return [delivery_info_from_row(r, parse_iso) for r in reversed(rows)]

    async def list_attempts(self, delivery_id: int) -> list[AttemptInfo]:
        return await self._run(self._list_attempts, delivery_id)

    def _list_attempts(self, delivery_id: int) -> list[AttemptInfo]:
        rows = self.conn.execute(
            "SELECT * FROM attempts WHERE delivery_id = ? ORDER BY id", (delivery_id,)
        ).fetchall()
        return [
            AttemptInfo(
                at=datetime.fromisoformat(r["at"]),
                status=r["status"],
                duration_ms=r["duration_ms"],
                error=r["error"],
                response=r["response"],
            )
            for r in rows
        ]

    async def delivery_counts(self, states: Sequence[str]) -> dict[str, dict[str, int]]:
        return await self._run(self._delivery_counts, list(states))

    def _delivery_counts(self, states: list[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for state in states:
            # counting pending and dead every few seconds must not scan the delivered history;
            # without ANALYZE statistics the planner would pick the (listener, state) index
            index = _STATE_INDEX.get(state)
            if index is None:
                raise ValueError(f"unknown delivery state {state!r}")
            # the state as a literal: a partial index cannot serve a bound parameter
            for listener, n in self.conn.execute(
                f"SELECT listener, COUNT(*) FROM deliveries INDEXED BY {index} "  # noqa: S608 - fixed names
                f"WHERE state = '{state}' GROUP BY listener"
            ):
                out.setdefault(listener, {})[state] = n
        return out

    # -- operator actions and maintenance ---------------------------------------------------

    async def replay(self, request: ReplayRequest, at: datetime) -> ReplayResult:
        return await self._run(self._replay, request, at)

    def _replay(self, request: ReplayRequest, at: datetime) -> ReplayResult:
        where: list[str] = []
        params: dict[str, Any] = {"now": at.timestamp(), "at": iso(at)}
        unknown: list[str] = []
        if request.event_ids:
            params["ids"] = dumps(list(request.event_ids))
            found = {
                r[0]
                for r in self.conn.execute(
                    "SELECT id FROM events WHERE id IN (SELECT value FROM json_each(:ids))", params
                )
            }
            unknown = [i for i in request.event_ids if i not in found]
            where.append(
                "event_seq IN (SELECT seq FROM events WHERE id IN (SELECT value FROM json_each(:ids)))"
            )
        if request.dead:
            where.append("state = 'dead'")
        if not where:
            raise ValueError("replay needs event ids or dead = True")
        if request.listener is not None:
            where.append("listener = :listener")
            params["listener"] = request.listener
        if request.since is not None:
            where.append("updated_at >= :since")
            params["since"] = iso(request.since)
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = :now, "  # noqa: S608 - fixed clauses, values bound
                "updated_at = :at, delivered_at = NULL "
                f"WHERE {' AND '.join(where)}",
                params,
            )
            if cur.rowcount:
                self._bump_control()
        return ReplayResult(cur.rowcount, tuple(unknown))

    async def prune(self, before: datetime, *, batch: int = 5000) -> PruneResult:
        # Small transactions: polls and deliveries interleave with a long prune.
        deliveries = attempts = events = 0
        while True:
            d, a = await self._run(self._prune_deliveries, iso(before), batch)
            deliveries, attempts = deliveries + d, attempts + a
            if d < batch:
                break
        while True:
            e = await self._run(self._prune_events, iso(before), batch)
            events += e
            if e < batch:
                break
        return PruneResult(events=events, deliveries=deliveries, attempts=attempts)

    def _prune_deliveries(self, before: str, batch: int) -> tuple[int, int]:
        with self._transaction() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM deliveries WHERE state != 'pending' AND updated_at < ? LIMIT ?",
                    (before, batch),
                )
            ]
            if not ids:
                return 0, 0
            chosen = dumps(ids)
            attempts = conn.execute(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?))",
                (chosen,),
            ).rowcount
            conn.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?))", (chosen,)
            )
        return len(ids), attempts

    def _prune_events(self, before: str, batch: int) -> int:
        with self._transaction() as conn:
            return conn.execute(
                "DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e "
                "WHERE e.timestamp < ? AND NOT EXISTS "
                "(SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq) LIMIT ?)",
                (before, batch),
            ).rowcount

    # -- instances and leases: one process owns a SQLite file, so it always owns everything --

    async def claim_deliveries(
        self,
        listener: str,
        now: float,
        limit: int,
        exclude_ids: Sequence[int],
        *,
        owner: str,
        claim_s: float,
    ) -> list[Delivery]:
        # One process owns the file, so who holds a claim is the dispatcher's in-flight set;
        # only "an attempt started" is written, before the request can leave.
        return await self._run(self._claim_deliveries, listener, now, limit, list(exclude_ids))

    def _claim_deliveries(
        self, listener: str, now: float, limit: int, exclude_ids: list[int]
    ) -> list[Delivery]:
        with self._transaction() as conn:
            due = self._due_deliveries(listener, now, limit, exclude_ids)
            if due:
                conn.execute(
                    "UPDATE deliveries SET claimed_at = ? WHERE claimed_at IS NULL "
                    "AND id IN (SELECT value FROM json_each(?))",
                    (iso(datetime.fromtimestamp(now, UTC)), dumps([d.id for d in due])),
                )
        return due

    async def release_claims(self, delivery_ids: Sequence[int], *, owner: str) -> None:
        if delivery_ids:
            await self._run(self._release_claims, list(delivery_ids))

    def _release_claims(self, delivery_ids: list[int]) -> None:
        # nothing was sent: a delivery never attempted may be coalesced again
        self.conn.execute(
            "UPDATE deliveries SET claimed_at = NULL WHERE state = 'pending' "
            "AND id IN (SELECT value FROM json_each(?)) "
            "AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = deliveries.id)",
            (dumps(delivery_ids),),
        )

    async def heartbeat(
        self, instance: InstanceInfo, held: Sequence[str], ttl_s: float
    ) -> Heartbeat:
        return Heartbeat(live_instances=1, tokens=dict.fromkeys(held, 0))

    async def acquire_source_lease(
        self, source: str, owner: str, ttl_s: float, *, orphans_only: bool = False
    ) -> int | None:
        return 0

    async def release_source_leases(self, owner: str, sources: Sequence[str]) -> None:
        return None

    async def leave(self, owner: str) -> None:
        return None

    async def watch_deliveries(self, wake: Callable[[], None]) -> None:
        return None

    async def list_owners(self) -> OwnersReport:
        return OwnersReport(instances=[], unowned_sources=[])


def _stored_source_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Source-state values as SQLite stores them: times as ISO text, validators as JSON."""
    return {
        k: iso(v) if isinstance(v, datetime) else dumps(v) if k == "validators" else v
        for k, v in fields.items()
    }


def _queued_entry(row: Mapping[str, Any]) -> QueuedEntry:
    return QueuedEntry(
        row["delivery_id"], row["type"], row["attempts"], row["claimed_at"] is not None
    )


def _where(filters: list[Filter], limit: int) -> tuple[str, dict[str, Any]]:
    """A WHERE clause with named placeholders, and its parameters (times stored as ISO text)."""
    clause = " AND ".join(f"{col} {op} :{name}" for col, op, name, _ in filters) or "1 = 1"
    params: dict[str, Any] = {"limit": limit}
    for _, _, name, value in filters:
        params[name] = iso(value) if isinstance(value, datetime) else value
    return clause, params


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back (e.g. on SQLITE_FULL); a second ROLLBACK would raise
    # "no transaction is active" and hide the error that matters.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _settle(done: asyncio.Future[str], outcome: str | Exception) -> None:
    if done.done():  # the caller was cancelled; the attempt is recorded all the same
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


def _describe(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text:
        return f"{text} (another process holds a write lock on the state file)"
    if "full" in text:
        return f"{text} (the disk or the database's size limit is full)"
    return text
