"""The SQLite store's coalescing of a listener's queued updates (``coalesce = true``): the
trailing updates of a key that were never claimed become one merged delivery. The rule of which
run may merge is :func:`bridge.core.queue_rules.coalescible_tail`; this holds the SQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bridge.core.queue_rules import QueuedEntry, coalescible_tail
from bridge.store._rows import dumps
from bridge.store.base import MergeUpdates
from bridge.store.sqlite._base import SQLiteBase, iso, rollback, row_to_event


class SQLiteCoalescing(SQLiteBase):
    """Merging the coalescible tail of each key's pending updates into one delivery."""

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
            rollback(conn)
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


def _queued_entry(row: Mapping[str, Any]) -> QueuedEntry:
    return QueuedEntry(
        row["delivery_id"], row["type"], row["attempts"], row["claimed_at"] is not None
    )
