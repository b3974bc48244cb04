"""The PostgreSQL store's coordination: instances, source leases and the runtime records, all
timed by the database's clock.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

import orjson

from bridge.store._rows import dumps
from bridge.store.base import Heartbeat, InstanceInfo, InstanceStatus, LeaseInfo, OwnersReport
from bridge.store.postgres._base import PostgresBase

# Runtime records of processes that stopped writing them are dropped after this long.
_RUNTIME_KEEP = "1 day"

# Instances that stopped heartbeating are kept this many leases long for `pollbridge leases`.
_DEAD_INSTANCE_KEEP_LEASES = 20


class PostgresCoordination(PostgresBase):
    """Instances, leases, runtime records (:class:`bridge.store.base.Coordination`)."""

    async def heartbeat(
        self, instance: InstanceInfo, held: Sequence[str], ttl_s: float
    ) -> Heartbeat:
        async with self._connection("heartbeat") as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO instances (id, host, pid, started_at, last_seen, expires_at) "
                "VALUES (%(id)s, %(host)s, %(pid)s, %(started)s, clock_timestamp(), "
                "clock_timestamp() + %(ttl)s * interval '1 second') "
                "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, "
                "expires_at = excluded.expires_at",
                {
                    "id": instance.id,
                    "host": instance.host,
                    "pid": instance.pid,
                    "started": instance.started_at,
                    "ttl": ttl_s,
                },
            )
            # Renewed even past expiry while nobody else took it: the token is still ours.
            cur = await conn.execute(
                "UPDATE source_leases SET expires_at = clock_timestamp() + %s * interval '1 second' "
                "WHERE owner = %s AND source = ANY(%s) RETURNING source, token",
                (ttl_s, instance.id, list(held)),
            )
            tokens = {r["source"]: int(r["token"]) for r in await cur.fetchall()}
            await conn.execute(
                "DELETE FROM instances WHERE expires_at < clock_timestamp() - %s * interval '1 second'",
                (ttl_s * _DEAD_INSTANCE_KEEP_LEASES,),
            )
            cur = await conn.execute(
                "SELECT count(*) AS n FROM instances WHERE expires_at > clock_timestamp()"
            )
            row = await cur.fetchone()
        return Heartbeat(live_instances=max(1, int(row["n"]) if row else 1), tokens=tokens)

    async def acquire_source_lease(
        self, source: str, owner: str, ttl_s: float, *, orphans_only: bool = False
    ) -> int | None:
        # Taking over bumps the token, which fences the previous owner's commit out.
        async with self._connection("acquire_source_lease") as conn:
            cur = await conn.execute(
                """
                INSERT INTO source_leases AS l (source, owner, token, acquired_at, expires_at)
                VALUES (%(source)s, %(owner)s, 1, clock_timestamp(),
                        clock_timestamp() + %(ttl)s * interval '1 second')
                ON CONFLICT (source) DO UPDATE SET
                    owner = excluded.owner,
                    token = CASE WHEN l.owner = excluded.owner THEN l.token ELSE l.token + 1 END,
                    acquired_at = CASE WHEN l.owner = excluded.owner THEN l.acquired_at
                                       ELSE excluded.acquired_at END,
                    expires_at = excluded.expires_at
                WHERE l.owner = excluded.owner
                   OR (l.expires_at <= clock_timestamp()
                       AND (l.owner IS NOT NULL OR NOT %(orphans_only)s))
                RETURNING token
                """,
                {"source": source, "owner": owner, "ttl": ttl_s, "orphans_only": orphans_only},
            )
            row = await cur.fetchone()
        return None if row is None else int(row["token"])

    async def release_source_leases(self, owner: str, sources: Sequence[str]) -> None:
        async with self._connection("release_source_leases") as conn:
            await conn.execute(
                "UPDATE source_leases SET owner = NULL, expires_at = clock_timestamp() "
                "WHERE owner = %s AND source = ANY(%s)",
                (owner, list(sources)),
            )

    async def leave(self, owner: str) -> None:
        async with self._connection("leave") as conn, conn.transaction():
            # Expired rather than released: to the others these are a departed owner's leases,
            # which even an instance at its share takes (released ones are for balancing).
            await conn.execute(
                "UPDATE source_leases SET expires_at = clock_timestamp() WHERE owner = %s",
                (owner,),
            )
            cur = await conn.execute(
                "UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL "
                "WHERE claimed_by = %s AND state = 'pending'",
                (owner,),
            )
            await conn.execute("DELETE FROM instances WHERE id = %s", (owner,))
            if cur.rowcount:
                await conn.execute("SELECT pg_notify(%s, '')", (self.channel,))

    async def list_owners(self) -> OwnersReport:
        async with self._connection("list_owners") as conn:
            cur = await conn.execute(
                """
                SELECT i.*, i.expires_at > clock_timestamp() AS alive,
                    coalesce((SELECT array_agg(l.source ORDER BY l.source) FROM source_leases l
                              WHERE l.owner = i.id AND l.expires_at > clock_timestamp()),
                             '{}') AS sources,
                    (SELECT count(*) FROM deliveries d WHERE d.claimed_by = i.id
                       AND d.state = 'pending' AND d.claimed_until > clock_timestamp()) AS claimed
                FROM instances i ORDER BY i.host, i.started_at, i.id
                """
            )
            rows = await cur.fetchall()
            cur = await conn.execute(
                "SELECT source FROM source_leases l WHERE l.owner IS NULL "
                "OR l.expires_at <= clock_timestamp() "
                "OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = l.owner "
                "AND i.expires_at > clock_timestamp()) ORDER BY source"
            )
            unowned = [r["source"] for r in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT source, owner, acquired_at, expires_at FROM source_leases ORDER BY source"
            )
            leases = [
                LeaseInfo(
                    r["source"],
                    r["owner"],
                    r["acquired_at"].astimezone(UTC),
                    r["expires_at"].astimezone(UTC),
                )
                for r in await cur.fetchall()
            ]
        return OwnersReport(
            instances=[
                InstanceStatus(
                    id=r["id"],
                    host=r["host"],
                    pid=r["pid"],
                    started_at=r["started_at"].astimezone(UTC),
                    last_seen=r["last_seen"].astimezone(UTC),
                    alive=bool(r["alive"]),
                    sources=tuple(r["sources"]),
                    claimed_deliveries=int(r["claimed"]),
                )
                for r in rows
            ],
            unowned_sources=unowned,
            leases=leases,
        )

    async def write_runtime(self, status: Mapping[str, Any]) -> None:
        # One record per process: several instances share this database.
        key = f"runtime:{socket.gethostname()}:{os.getpid()}"
        async with self._connection("write_runtime") as conn:
            await conn.execute(
                "INSERT INTO meta (key, value, updated_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, dumps(dict(status))),
            )
            await conn.execute(
                "DELETE FROM meta WHERE key LIKE 'runtime:%%' "
                "AND updated_at < now() - %s::interval",
                (_RUNTIME_KEEP,),
            )

    async def read_runtime(self) -> dict[str, Any] | None:
        """The freshest running instance's status, with every instance under ``instances``."""
        async with self._connection("read_runtime") as conn:
            cur = await conn.execute(
                "SELECT key, value FROM meta WHERE key LIKE 'runtime:%%' ORDER BY updated_at DESC"
            )
            rows = await cur.fetchall()
        records = []
        for r in rows:
            value = orjson.loads(r["value"])
            if isinstance(value, dict):
                value.setdefault("host", r["key"].split(":")[1])
                records.append(value)
        if not records:
            return None
        running = [r for r in records if r.get("stopped_at") is None]
        chosen = dict((running or records)[0])
        chosen["instances"] = [
            {k: r.get(k) for k in ("host", "pid", "started_at", "heartbeat_at", "stopped_at")}
            for r in records
        ]
        return chosen

    async def control_version(self) -> int:
        async with self._connection("control_version") as conn:
            cur = await conn.execute("SELECT value FROM meta WHERE key = 'control'")
            row = await cur.fetchone()
        return 0 if row is None else int(row["value"])
