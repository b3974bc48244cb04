"""The PostgreSQL store's coalescing of a listener's queued updates (``coalesce = true``): the
trailing updates of a key that were never claimed become one merged delivery, one coalescer per
listener at a time across instances. The rule is :func:`bridge.core.queue_rules.coalescible_tail`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bridge.core.ids import new_event_id
from bridge.core.queue_rules import QueuedEntry, coalescible_tail
from bridge.store._rows import dumps
from bridge.store.base import MergeUpdates
from bridge.store.postgres._base import PostgresBase
from bridge.store.postgres._conn import Conn, row_to_event


class PostgresCoalescing(PostgresBase):
    """Merging the coalescible tail of each key's pending updates into one delivery."""

    async def coalesce_pending(
        self, listener: str, at: datetime, exclude_ids: Sequence[int], merge: MergeUpdates
    ) -> int:
        excluded = set(exclude_ids)
        async with self._connection("coalesce_pending") as conn, conn.transaction():
            # One coalescer per listener at a time across instances; keys in a fixed order.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                (f"pollbridge:{self.schema}:coalesce:{listener}",),
            )
            cur = await conn.execute(
                "SELECT source, key_text FROM deliveries "
                "WHERE listener = %s AND state = 'pending' AND attempts = 0 AND claimed_at IS NULL "
                "AND id <> ALL(%s) "
                "GROUP BY source, key_text HAVING count(*) >= 2 ORDER BY source, key_text",
                (listener, list(exclude_ids)),
            )
            merged = 0
            for row in await cur.fetchall():
                merged += await self._coalesce_key(
                    conn, listener, row["source"], row["key_text"], at, excluded, merge
                )
        return merged

    async def _coalesce_key(
        self,
        conn: Conn,
        listener: str,
        source: str,
        key_text: str,
        at: datetime,
        excluded: set[int],
        merge: MergeUpdates,
    ) -> int:
        # A poll commit of this source locks its row too: hold it, so no event of the source
        # is committed between reading the run and writing the merged event. Otherwise a
        # later update committed meanwhile would get a lower seq than the merged event, and the
        # key's webhooks would go out of order.
        await conn.execute("SELECT 1 FROM sources WHERE name = %s FOR UPDATE", (source,))
        # FOR UPDATE: another instance's claim (SKIP LOCKED) passes these rows by meanwhile.
        cur = await conn.execute(
            """
            SELECT d.id AS delivery_id, d.attempts, d.next_at, d.claimed_at,
                   coalesce(d.claimed_until > clock_timestamp(), false) AS claimed, e.*
            FROM deliveries d JOIN events e ON e.seq = d.event_seq
            WHERE d.listener = %s AND d.source = %s AND d.key_text = %s AND d.state = 'pending'
            ORDER BY d.event_seq
            FOR UPDATE OF d
            """,
            (listener, source, key_text),
        )
        run = coalescible_tail(await cur.fetchall(), _queued_entry, excluded)
        if not run:
            return 0
        events = [row_to_event(r) for r in run]
        changes = merge(events)
        into: int | None = None
        if changes is not None:
            cur = await conn.execute(
                "INSERT INTO events (id, source, key_text, key, type, timestamp, before, after, "
                "changes) VALUES (%s, %s, %s, %s, 'updated', %s, %s, %s, %s) RETURNING seq",
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
            seq_row = await cur.fetchone()
            assert seq_row is not None  # noqa: S101 - RETURNING always yields the row
            cur = await conn.execute(
                "INSERT INTO deliveries (event_seq, listener, source, key_text, next_at, "
                "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    seq_row["seq"],
                    listener,
                    source,
                    key_text,
                    min(r["next_at"] for r in run),
                    at,
                    at,
                ),
            )
            id_row = await cur.fetchone()
            assert id_row is not None  # noqa: S101
            into = int(id_row["id"])
        await conn.execute(
            "UPDATE deliveries SET state = 'coalesced', coalesced_into = %s, updated_at = %s "
            "WHERE id = ANY(%s)",
            (into, at, [r["delivery_id"] for r in run]),
        )
        return len(run) - (0 if into is None else 1)


def _queued_entry(row: Mapping[str, Any]) -> QueuedEntry:
    return QueuedEntry(
        row["delivery_id"],
        row["type"],
        row["attempts"],
        ever_claimed=row["claimed_at"] is not None,
        claimed_now=bool(row["claimed"]),
    )
