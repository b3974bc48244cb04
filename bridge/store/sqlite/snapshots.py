"""The SQLite store's sources and snapshots: each poll is one ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from bridge.core import source_state
from bridge.errors import StaleSnapshot
from bridge.models import Event, ItemKey, SourceState
from bridge.store._rows import SOURCE_FIELDS, dumps, key_from_json
from bridge.store.base import PollCommit, SeenKeys, SnapshotHashes
from bridge.store.sqlite._base import SQLiteBase, iso, parse_iso, rollback, row_to_source


class SQLiteSnapshotReads(SQLiteBase):
    """The read side of sources and snapshots: states, hashes, items, tracked keys."""

    async def get_source_state(self, source: str) -> SourceState | None:
        return await self._run(self._get_source_state, source)

    def _get_source_state(self, source: str) -> SourceState | None:
        row = self.conn.execute("SELECT * FROM sources WHERE name = ?", (source,)).fetchone()
        return None if row is None else row_to_source(row)

    async def list_source_states(self) -> list[SourceState]:
        return await self._run(self._list_source_states)

    def _list_source_states(self) -> list[SourceState]:
        rows = self.conn.execute("SELECT * FROM sources ORDER BY name").fetchall()
        return [row_to_source(r) for r in rows]

    async def load_hashes(self, source: str, *, list_hashes: bool = False) -> SnapshotHashes:
        return await self._run(self._load_hashes, source, list_hashes)

    def _load_hashes(self, source: str, with_list_hashes: bool = False) -> SnapshotHashes:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            row = conn.execute(
                "SELECT snapshot_version FROM sources WHERE name = ?", (source,)
            ).fetchone()
            # one JSON object built by SQLite, parsed by orjson: half the time of a Python
            # tuple per row (0.10-0.13 s against 0.19-0.30 at 200k items)
            (text,) = conn.execute(
                "SELECT json_group_object(key_text, hash) FROM items WHERE source = ?",
                (source,),
            ).fetchone()
            hashes = orjson.loads(text)
            list_hashes = None
            if with_list_hashes:
                (text,) = conn.execute(
                    "SELECT json_group_object(key_text, list_hash) FROM items "
                    "WHERE source = ? AND list_hash IS NOT NULL",
                    (source,),
                ).fetchone()
                list_hashes = orjson.loads(text)
        finally:
            conn.execute("COMMIT")
        return SnapshotHashes(row[0] if row else 0, hashes, list_hashes)

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

    async def load_seen(self, source: str) -> SeenKeys:
        return await self._run(self._load_seen, source)

    def _load_seen(self, source: str) -> SeenKeys:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            version = self._snapshot_version(source)
            rows = conn.execute(
                "SELECT key_text, first_seen FROM seen_keys WHERE source = ? "
                "ORDER BY first_seen, key_text",
                (source,),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return SeenKeys(version, {k: _time(at) for k, at in rows})

    async def load_missing(self, source: str) -> dict[str, int]:
        return await self._run(self._load_missing, source)

    def _load_missing(self, source: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT key_text, polls FROM missing_items WHERE source = ?", (source,)
        )
        return {k: int(n) for k, n in rows}


class SQLiteSnapshots(SQLiteSnapshotReads):
    """Sources and snapshots (:class:`bridge.store.base.SnapshotStore`): the read side, and
    what a poll writes (its commit, an unchanged or failed poll, a state update)."""

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
            self._write_tracked(commit)
            events = self._write_events(commit)
            self._write_deliveries(commit, events)
            self._write_source_state(commit, version + 1)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return events

    def _write_items(self, commit: PollCommit) -> None:
        now = iso(commit.polled_at)
        if commit.upserts:
            self.conn.executemany(
                "INSERT INTO items (source, key_text, key, hash, item, updated_at, list_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, key_text) DO UPDATE SET "
                "key = excluded.key, hash = excluded.hash, item = excluded.item, "
                "updated_at = excluded.updated_at, list_hash = excluded.list_hash",
                (
                    (
                        commit.source,
                        it.key_text,
                        dumps(it.key if isinstance(it.key, str) else list(it.key)),
                        it.hash,
                        dumps(it.value),
                        now,
                        it.list_hash,
                    )
                    for it in commit.upserts
                ),
            )
        if commit.deletes:
            self.conn.executemany(
                "DELETE FROM items WHERE source = ? AND key_text = ?",
                ((commit.source, k) for k in commit.deletes),
            )

    def _write_tracked(self, commit: PollCommit) -> None:
        """The seen keys of an append source and the missing counts of pending deletions."""
        conn, source = self.conn, commit.source
        seen = commit.seen
        if seen is None:
            conn.execute("DELETE FROM seen_keys WHERE source = ?", (source,))
        else:
            conn.executemany(
                "DELETE FROM seen_keys WHERE source = ? AND key_text = ?",
                ((source, k) for k in seen.forget),
            )
            at = iso(commit.polled_at)
            conn.executemany(
                "INSERT INTO seen_keys (source, key_text, first_seen) VALUES (?, ?, ?) "
                "ON CONFLICT (source, key_text) DO NOTHING",
                ((source, k, at) for k in seen.add),
            )
        conn.execute("DELETE FROM missing_items WHERE source = ?", (source,))
        if commit.missing:
            conn.executemany(
                "INSERT INTO missing_items (source, key_text, polls) VALUES (?, ?, ?)",
                ((source, k, n) for k, n in commit.missing.items()),
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
                "INSERT INTO events (id, source, key_text, key, type, type_name, timestamp, "
                "before, after, changes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    commit.source,
                    change.key_text,
                    key_json,
                    change.type,
                    change.name,
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
                    change.name,
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
            cursor=commit.cursor,
            reconciled_at=commit.reconciled_at,
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
            rollback(conn)
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


def _time(text: str) -> datetime:
    moment = parse_iso(text)
    assert moment is not None  # noqa: S101 - the column is NOT NULL
    return moment


def _stored_source_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Source-state values as SQLite stores them: times as ISO text, validators as JSON."""
    return {
        k: iso(v) if isinstance(v, datetime) else dumps(v) if k == "validators" else v
        for k, v in fields.items()
    }
