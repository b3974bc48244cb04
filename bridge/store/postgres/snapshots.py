"""The PostgreSQL store's sources and snapshots: a poll's commit is one transaction, fenced by
the source lease's token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from psycopg import sql

from bridge.core import source_state
from bridge.core.ids import new_event_id
from bridge.errors import LeaseLost, StaleSnapshot
from bridge.models import Event, ItemKey, SourceState
from bridge.store._rows import SOURCE_FIELDS, dumps, key_from_json, key_json
from bridge.store.base import PollCommit, SeenKeys, SnapshotHashes
from bridge.store.postgres._base import PostgresBase
from bridge.store.postgres._conn import Conn, row_to_source, utc


class PostgresSnapshotReads(PostgresBase):
    """The read side of sources and snapshots: states, hashes, items, tracked keys."""

    async def get_source_state(self, source: str) -> SourceState | None:
        async with self._connection("get_source_state") as conn:
            cur = await conn.execute("SELECT * FROM sources WHERE name = %s", (source,))
            row = await cur.fetchone()
        return None if row is None else row_to_source(row)

    async def list_source_states(self) -> list[SourceState]:
        async with self._connection("list_source_states") as conn:
            cur = await conn.execute("SELECT * FROM sources ORDER BY name")
            rows = await cur.fetchall()
        return [row_to_source(r) for r in rows]

    async def load_hashes(self, source: str, *, list_hashes: bool = False) -> SnapshotHashes:
        async with (
            self._connection("load_hashes") as conn,
            conn.transaction(),
        ):
            # One snapshot for both reads: the version must describe exactly these hashes.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur = await conn.execute(
                "SELECT snapshot_version FROM sources WHERE name = %s", (source,)
            )
            row = await cur.fetchone()
            # one JSON object built by the server, parsed by orjson in a thread: a row each
            # would be built on the event loop (~1 s for 1M items)
            cur = await conn.execute(
                "SELECT coalesce(json_object_agg(key_text, hash), '{}')::text AS hashes "
                "FROM items WHERE source = %s",
                (source,),
            )
            text = (await cur.fetchone() or {}).get("hashes") or "{}"
            hashes = await asyncio.to_thread(orjson.loads, text)
            listed = None
            if list_hashes:
                cur = await conn.execute(
                    "SELECT coalesce(json_object_agg(key_text, list_hash), '{}')::text "
                    "AS hashes FROM items WHERE source = %s AND list_hash IS NOT NULL",
                    (source,),
                )
                text = (await cur.fetchone() or {}).get("hashes") or "{}"
                listed = await asyncio.to_thread(orjson.loads, text)
        return SnapshotHashes(int(row["snapshot_version"]) if row else 0, hashes, listed)

    async def snapshot_version(self, source: str) -> int:
        async with self._connection("snapshot_version") as conn:
            cur = await conn.execute(
                "SELECT snapshot_version FROM sources WHERE name = %s", (source,)
            )
            row = await cur.fetchone()
        return int(row["snapshot_version"]) if row else 0

    async def load_items(
        self, source: str, key_texts: Sequence[str]
    ) -> dict[str, tuple[ItemKey, Any]]:
        async with self._connection("load_items") as conn:
            cur = await conn.execute(
                "SELECT key_text, key, item FROM items WHERE source = %s AND key_text = ANY(%s)",
                (source, list(key_texts)),
            )
            rows = await cur.fetchall()
        return {r["key_text"]: (key_from_json(r["key"]), orjson.loads(r["item"])) for r in rows}

    async def load_seen(self, source: str) -> SeenKeys:
        async with (
            self._connection("load_seen") as conn,
            conn.transaction(),
        ):
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur = await conn.execute(
                "SELECT snapshot_version FROM sources WHERE name = %s", (source,)
            )
            row = await cur.fetchone()
            cur = await conn.execute(
                "SELECT key_text, first_seen FROM seen_keys WHERE source = %s "
                "ORDER BY first_seen, key_text",
                (source,),
            )
            seen = {r["key_text"]: utc(r["first_seen"]) for r in await cur.fetchall()}
        version = int(row["snapshot_version"]) if row else 0
        return SeenKeys(version, {k: at for k, at in seen.items() if at is not None})

    async def load_missing(self, source: str) -> dict[str, int]:
        async with self._connection("load_missing") as conn:
            cur = await conn.execute(
                "SELECT key_text, polls FROM missing_items WHERE source = %s", (source,)
            )
            rows = await cur.fetchall()
        return {r["key_text"]: int(r["polls"]) for r in rows}


class PostgresSnapshots(PostgresSnapshotReads):
    """Sources and snapshots (:class:`bridge.store.base.SnapshotStore`): the read side, and
    what a poll writes (its commit, an unchanged or failed poll, a state update)."""

    async def commit_poll(self, commit: PollCommit) -> list[Event]:
        async with self._connection("commit_poll") as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = on")
            await self._check_lease(conn, commit)
            # The row lock serialises commits of one source; insert first so a first poll
            # has a row to lock (a concurrent first commit then sees version 1 and is stale).
            await conn.execute(
                "INSERT INTO sources (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                (commit.source,),
            )
            cur = await conn.execute(
                "SELECT snapshot_version FROM sources WHERE name = %s FOR UPDATE", (commit.source,)
            )
            row = await cur.fetchone()
            version = int(row["snapshot_version"]) if row else 0
            if commit.expected_version is not None and version != commit.expected_version:
                raise StaleSnapshot(
                    commit.source,
                    f"snapshot of {commit.source!r} moved from version "
                    f"{commit.expected_version} to {version} during the poll",
                )
            await self._write_items(conn, commit)
            await self._write_tracked(conn, commit)
            events = await self._write_events(conn, commit)
            delivered = await self._write_deliveries(conn, commit, events)
            await self._upsert_source(conn, commit.source, self._source_fields(commit, version + 1))
            if delivered:
                await conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
        return events

    async def _check_lease(self, conn: Conn, commit: PollCommit) -> None:
        if commit.lease_token is None:
            return
        # FOR SHARE: a takeover (which bumps the token) waits until this commit is done.
        cur = await conn.execute(
            "SELECT token, owner FROM source_leases WHERE source = %s FOR SHARE", (commit.source,)
        )
        row = await cur.fetchone()
        if row is None or int(row["token"]) != commit.lease_token:
            holder = "nobody" if row is None or row["owner"] is None else row["owner"]
            raise LeaseLost(
                commit.source,
                f"lease on source {commit.source!r} was lost during the poll (now held by "
                f"{holder}); its commit was refused",
            )

    async def _write_items(self, conn: Conn, commit: PollCommit) -> None:
        if commit.upserts:
            await conn.execute(
                "INSERT INTO items (source, key_text, key, hash, item, updated_at, list_hash) "
                "SELECT %s, k, kj, h, it, %s, lh FROM unnest(%s::text[], %s::text[], "
                "%s::text[], %s::text[], %s::text[]) AS u(k, kj, h, it, lh) "
                "ON CONFLICT (source, key_text) DO UPDATE SET key = excluded.key, "
                "hash = excluded.hash, item = excluded.item, updated_at = excluded.updated_at, "
                "list_hash = excluded.list_hash",
                (
                    commit.source,
                    commit.polled_at,
                    [it.key_text for it in commit.upserts],
                    [key_json(it.key) for it in commit.upserts],
                    [it.hash for it in commit.upserts],
                    [dumps(it.value) for it in commit.upserts],
                    [it.list_hash for it in commit.upserts],
                ),
            )
        if commit.deletes:
            await conn.execute(
                "DELETE FROM items WHERE source = %s AND key_text = ANY(%s)",
                (commit.source, list(commit.deletes)),
            )

    async def _write_tracked(self, conn: Conn, commit: PollCommit) -> None:
        """The seen keys of an append source and the missing counts of pending deletions."""
        source, seen = commit.source, commit.seen
        if seen is None:
            await conn.execute("DELETE FROM seen_keys WHERE source = %s", (source,))
        else:
            if seen.forget:
                await conn.execute(
                    "DELETE FROM seen_keys WHERE source = %s AND key_text = ANY(%s)",
                    (source, list(seen.forget)),
                )
            if seen.add:
                await conn.execute(
                    "INSERT INTO seen_keys (source, key_text, first_seen) "
                    "SELECT %s, k, %s FROM unnest(%s::text[]) AS u(k) "
                    "ON CONFLICT (source, key_text) DO NOTHING",
                    (source, commit.polled_at, list(seen.add)),
                )
        await conn.execute("DELETE FROM missing_items WHERE source = %s", (source,))
        if commit.missing:
            await conn.execute(
                "INSERT INTO missing_items (source, key_text, polls) "
                "SELECT %s, k, n FROM unnest(%s::text[], %s::integer[]) AS u(k, n)",
                (source, list(commit.missing), list(commit.missing.values())),
            )

    async def _write_events(self, conn: Conn, commit: PollCommit) -> list[Event]:
        if not commit.changes:
            return []
        ids = [new_event_id(commit.polled_at) for _ in commit.changes]
        cur = await conn.execute(
            "INSERT INTO events (id, source, key_text, key, type, type_name, timestamp, before, "
            "after, changes) SELECT i, %s, k, kj, t, tn, %s, b, a, c FROM unnest(%s::text[], "
            "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
            "%s::text[]) WITH ORDINALITY AS u(i, k, kj, t, tn, b, a, c, n) ORDER BY n "
            "RETURNING id, seq",
            (
                commit.source,
                commit.polled_at,
                ids,
                [c.key_text for c in commit.changes],
                [key_json(c.key) for c in commit.changes],
                [c.type for c in commit.changes],
                [c.name for c in commit.changes],
                [None if c.before is None else dumps(c.before) for c in commit.changes],
                [None if c.after is None else dumps(c.after) for c in commit.changes],
                [dumps(c.changes) for c in commit.changes],
            ),
        )
        seqs = {r["id"]: int(r["seq"]) for r in await cur.fetchall()}
        return [
            Event(
                event_id,
                seqs[event_id],
                commit.source,
                change.key,
                change.type,
                commit.polled_at,
                change.before,
                change.after,
                change.changes,
                change.name,
            )
            for event_id, change in zip(ids, commit.changes, strict=True)
        ]

    async def _write_deliveries(self, conn: Conn, commit: PollCommit, events: list[Event]) -> int:
        rows = [
            (event.seq, listener, change.key_text)
            for event, change, listeners in zip(events, commit.changes, commit.routes, strict=True)
            for listener in listeners
        ]
        if rows:
            await conn.execute(
                "INSERT INTO deliveries (event_seq, listener, source, key_text, next_at, "
                "created_at, updated_at) SELECT s, l, %s, k, %s, %s, %s "
                "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS u(s, l, k)",
                (
                    commit.source,
                    commit.polled_at.timestamp(),
                    commit.polled_at,
                    commit.polled_at,
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    [r[2] for r in rows],
                ),
            )
        return len(rows)

    @staticmethod
    def _source_fields(commit: PollCommit, version: int) -> dict[str, Any]:
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
        return _stored_source_fields(fields)

    @staticmethod
    async def _upsert_source(conn: Conn, source: str, fields: Mapping[str, Any]) -> None:
        cols = [sql.Identifier(c) for c in fields]
        query = sql.SQL(
            "INSERT INTO sources (name, {cols}) VALUES (%s, {values}) "
            "ON CONFLICT (name) DO UPDATE SET {assignments}"
        ).format(
            cols=sql.SQL(", ").join(cols),
            values=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
            assignments=sql.SQL(", ").join(sql.SQL("{c} = excluded.{c}").format(c=c) for c in cols),
        )
        await conn.execute(query, (source, *fields.values()))

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
        # the core's rule from a streak of 0 is the first row; an existing row counts up in
        # the same statement, so concurrent failures cannot lose a count
        fields = source_state.after_failure(
            previous_failures=0,
            at=at,
            duration_s=duration_s,
            error=error,
            result=result,
            not_before=not_before,
        )
        async with self._connection("record_poll_failure") as conn:
            cur = await conn.execute(
                "INSERT INTO sources (name, last_poll_at, last_result, last_error, "
                "last_duration_s, consecutive_failures, not_before) "
                "VALUES (%(name)s, %(last_poll_at)s, %(last_result)s, %(last_error)s, "
                "%(last_duration_s)s, %(consecutive_failures)s, %(not_before)s) "
                "ON CONFLICT (name) DO UPDATE SET "
                "last_poll_at = excluded.last_poll_at, last_result = excluded.last_result, "
                "last_error = excluded.last_error, last_duration_s = excluded.last_duration_s, "
                "consecutive_failures = sources.consecutive_failures + 1, "
                "not_before = excluded.not_before RETURNING *",
                {"name": source, **fields},
            )
            row = await cur.fetchone()
        assert row is not None  # noqa: S101 - RETURNING always yields the row
        return row_to_source(row)

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
        async with self._connection("record_poll_unchanged") as conn:
            await self._upsert_source(conn, source, _stored_source_fields(fields))

    async def update_source_state(self, source: str, **fields: Any) -> None:
        unknown = set(fields) - set(SOURCE_FIELDS)
        if unknown:
            raise ValueError(f"unknown source state fields: {sorted(unknown)}")
        async with self._connection("update_source_state") as conn:
            await self._upsert_source(conn, source, _stored_source_fields(fields))


def _stored_source_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Source-state values as this schema stores them: validators as JSON text."""
    return {
        k: dumps(v) if k == "validators" else bool(v) if k == "accept_requested" else v
        for k, v in fields.items()
    }
