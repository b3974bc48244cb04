"""The PostgreSQL store's plumbing: the pool, bounded calls, opening and migrating."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bridge.core.redaction import redact_url
from bridge.errors import NoStateError, StoreError
from bridge.store.base import SCHEMA_VERSION, Access
from bridge.store.postgres._conn import (
    CALL_TIMEOUT_S,
    CHECK_IDLE_S,
    CHECK_TIMEOUT_S,
    Conn,
    Deadline,
    bounded_conninfo,
    describe_error,
    log,
    schema_of,
    session_timeouts,
)
from bridge.store.postgres.schema import MIGRATIONS


class PostgresBase:
    """The pool, the bounded connection every call uses, and the schema's lifecycle."""

    def __init__(
        self,
        url: str,
        *,
        access: Access = "daemon",
        min_connections: int = 1,
        max_connections: int = 10,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ):
        self.location = redact_url(url)
        self.access: Access = access
        self._url = bounded_conninfo(url)
        self._timeouts = session_timeouts(url)
        self.call_timeout_s = call_timeout_s
        """Every store call fails with a StoreError naming it after this long (the database
        did not answer), instead of waiting for a network that may never come back."""
        self._calls: dict[object, float] = {}
        """In-flight calls -> when they started (loop time)."""
        self._last_used: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self._url_schema = schema_of(url)
        self.schema = self._url_schema or "public"
        """The schema holding the tables (known for sure once open)."""
        self._min = min_connections
        self._max = max_connections
        self._pool: AsyncConnectionPool[Conn] | None = None

    @property
    def channel(self) -> str:
        """The NOTIFY channel: channels are per database, so ours is named after the schema."""
        return f"pollbridge_{self.schema}"[:63]

    async def location_problem(self) -> str | None:
        return None  # a database server has no file to lose under us

    def oldest_call_s(self) -> float:
        """How long the oldest store call still running has been waiting (0 if none)."""
        if not self._calls:
            return 0.0
        return asyncio.get_running_loop().time() - min(self._calls.values())

    @contextlib.asynccontextmanager
    async def _connection(self, operation: str, *, deadline: bool = True) -> AsyncIterator[Conn]:
        """A pooled connection in autocommit mode; driver errors become StoreError.

        The call, waiting for the connection included, must end within ``call_timeout_s``:
        past it the connection is severed, the call fails with a StoreError naming
        ``operation``, and the pool replaces the connection."""
        if self._pool is None:
            raise StoreError("use", "the store is not open", location=self.location)
        loop = asyncio.get_running_loop()
        call = object()
        self._calls[call] = loop.time()
        timer: Deadline | None = None
        try:
            async with self._pool.connection(
                timeout=self.call_timeout_s if deadline else None
            ) as conn:
                remaining = self.call_timeout_s - (loop.time() - self._calls[call])
                timer = Deadline(conn, max(remaining, 0.0)) if deadline else None
                try:
                    yield conn
                finally:
                    if timer is not None:
                        timer.cancel()
                    self._last_used[conn] = loop.time()
        except psycopg.Error as exc:
            if (timer is not None and timer.expired) or isinstance(exc, PoolTimeout):
                raise StoreError(
                    operation,
                    f"no answer from PostgreSQL within {self.call_timeout_s:g}s; the "
                    "connection was dropped and the next call uses a fresh one (is the "
                    "server reachable?)",
                    location=self.location,
                ) from exc
            raise StoreError(operation, describe_error(exc), location=self.location) from exc
        finally:
            del self._calls[call]

    async def _configure(self, conn: Conn) -> None:
        timer = Deadline(conn, CHECK_TIMEOUT_S)
        try:
            # Times come back in UTC whatever the server's TimeZone, as SQLite returns them.
            # Attempts, claims, leases and heartbeats need not wait for their WAL flush: a
            # server crash can only lose the last fraction of a second of them, which means a
            # duplicate attempt (same webhook-id) or a lease taken again, never a lost event.
            # Polls keep the flush (commit_poll). Measured: 2.5x the delivery throughput on a
            # fdatasync'ing disk.
            settings = {
                "TimeZone": "UTC",
                "synchronous_commit": "off",
                **self._timeouts,
                **({"default_transaction_read_only": "on"} if self.access == "read" else {}),
            }
            await conn.execute(
                sql.SQL("SELECT {}").format(
                    sql.SQL(", ").join(
                        sql.SQL("set_config({}, {}, false)").format(
                            sql.Literal(name), sql.Literal(value)
                        )
                        for name, value in settings.items()
                    )
                )
            )
        finally:
            timer.cancel()
        self._last_used[conn] = asyncio.get_running_loop().time()

    async def _check(self, conn: Conn) -> None:
        """Before a connection idle for a while is used: does it still answer? (Else the pool
        discards it and hands out another.)"""
        if asyncio.get_running_loop().time() - self._last_used.get(conn, 0.0) < CHECK_IDLE_S:
            return
        timer = Deadline(conn, CHECK_TIMEOUT_S)
        try:
            await AsyncConnectionPool.check_connection(conn)
        finally:
            timer.cancel()

    async def open(self) -> None:
        # One plain connection first: it fails fast with the server's own words, and migrates.
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, row_factory=dict_row
            )
        except psycopg.Error as exc:
            raise StoreError(
                "open", f"cannot connect: {describe_error(exc)}", location=self.location
            ) from exc
        try:
            if self.access == "daemon":
                await self._migrate(conn)
            else:
                await self._attach(conn)
        except psycopg.Error as exc:
            raise StoreError("migrate", describe_error(exc), location=self.location) from exc
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._url,
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=self._configure,
            check=self._check,
            min_size=self._min,
            max_size=self._max,
            open=False,
            name="pollbridge",
        )
        try:
            await pool.open(wait=True, timeout=10)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(
                "open", f"cannot connect: {describe_error(exc)}", location=self.location
            ) from exc
        self._pool = pool

    async def _migrate(self, conn: Conn) -> None:
        async with conn.transaction():
            # Instances starting together must not migrate twice.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                (f"pollbridge:{self._url_schema or ''}",),
            )
            if self._url_schema is not None:
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(self._url_schema)
                    )
                )
            # Without a search_path in the URL, the role's own: "$user", public by default.
            cur = await conn.execute("SELECT current_schema() AS schema")
            row = await cur.fetchone()
            if row is None or row["schema"] is None:
                raise StoreError(
                    "open",
                    "no schema to create the tables in (no schema of the search_path exists); "
                    "name one in the URL: ?options=-csearch_path%3Dpollbridge",
                    location=self.location,
                )
            self.schema = str(row["schema"])
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_version")
            row = await cur.fetchone()
            current = int(row["v"]) if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    "open",
                    f"the database has schema version {current}, newer than this pollbridge "
                    f"understands ({SCHEMA_VERSION}); upgrade pollbridge",
                    location=self.location,
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        await conn.execute(statement.encode())
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                log.info("state %s: schema migrated to version %d", self.location, version)

    async def _attach(self, conn: Conn) -> None:
        """Beside a possibly running daemon: the schema must exist at our version already."""
        cur = await conn.execute(
            "SELECT current_schema() AS schema, to_regclass('schema_version') IS NOT NULL AS ok"
        )
        row = await cur.fetchone()
        if row is None or row["schema"] is None or not row["ok"]:
            raise NoStateError(self.location)
        self.schema = str(row["schema"])
        cur = await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_version")
        row = await cur.fetchone()
        version = int(row["v"]) if row else 0
        if version == 0:
            raise NoStateError(self.location)
        if version != SCHEMA_VERSION:
            newer = version > SCHEMA_VERSION
            raise StoreError(
                "open",
                f"the database has schema version {version}, this pollbridge reads version "
                f"{SCHEMA_VERSION}; "
                + (
                    "upgrade pollbridge"
                    if newer
                    else "start a daemon once (it upgrades the schema), then try again"
                ),
                location=self.location,
            )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def schema_version(self) -> int:
        """The schema version recorded in the database."""
        async with self._connection("schema_version") as conn:
            cur = await conn.execute("SELECT max(version) AS v FROM schema_version")
            row = await cur.fetchone()
        return int(row["v"]) if row and row["v"] is not None else 0

    @staticmethod
    async def _bump_control(conn: Conn) -> None:
        await conn.execute(
            "INSERT INTO meta (key, value) VALUES ('control', '1') ON CONFLICT (key) "
            "DO UPDATE SET value = (meta.value::bigint + 1)::text, updated_at = now()"
        )
