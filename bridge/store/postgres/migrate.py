"""``pollbridge migrate-state``: a SQLite state copied into an empty PostgreSQL schema."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg import sql

from bridge.errors import StoreError
from bridge.store.postgres._base import PostgresBase
from bridge.store.postgres._conn import Conn

# What `pollbridge migrate-state` copies, parents first, with each table's identity column.
_COPIED_TABLES = ("sources", "items", "events", "deliveries", "attempts", "listeners")

_IDENTITY_COLUMNS = {"events": "seq", "deliveries": "id", "attempts": "id"}


class PostgresImport(PostgresBase):
    """The copy from SQLite, in one transaction."""

    async def import_sqlite(self, source: sqlite3.Connection) -> dict[str, int]:
        """Copy a SQLite state (snapshots, events, deliveries, attempts, source and listener
        state) into this empty database in one transaction; return the rows copied per table.

        Columns are matched by name; a SQLite column this schema lacks stops the copy rather
        than being dropped.
        """
        counts: dict[str, int] = {}
        async with (
            self._connection("migrate-state", deadline=False) as conn,
            conn.transaction(),
        ):
            await conn.execute("SET LOCAL synchronous_commit = on")
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM sources) + (SELECT count(*) FROM events) "
                "+ (SELECT count(*) FROM deliveries) AS n"
            )
            row = await cur.fetchone()
            if row and row["n"]:
                raise StoreError(
                    "migrate-state",
                    "the target already holds pollbridge state; migrate into an empty database "
                    "or schema (set one with ?options=-csearch_path%3Dname)",
                    location=self.location,
                )
            for table in _COPIED_TABLES:
                counts[table] = await self._import_table(conn, source, table)
            for table, column in _IDENTITY_COLUMNS.items():
                await conn.execute(
                    sql.SQL(
                        "SELECT setval(pg_get_serial_sequence({t}, {c}), "
                        "coalesce((SELECT max({col}) FROM {table}), 0) + 1, false)"
                    ).format(
                        t=sql.Literal(table),
                        c=sql.Literal(column),
                        col=sql.Identifier(column),
                        table=sql.Identifier(table),
                    )
                )
        return counts

    async def _import_table(self, conn: Conn, source: sqlite3.Connection, table: str) -> int:
        cur = await conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        )
        pg_types = {r["column_name"]: r["data_type"] for r in await cur.fetchall()}
        lite_columns = [r[1] for r in source.execute(f"PRAGMA table_info({table})")]
        missing = [c for c in lite_columns if c not in pg_types]
        if missing:
            raise StoreError(
                "migrate-state",
                f"the SQLite table {table} has column(s) {', '.join(missing)} that this "
                "PostgreSQL schema lacks; upgrade pollbridge before migrating",
                location=self.location,
            )
        columns = [c for c in lite_columns if c in pg_types]
        convert = [_importer(pg_types[c]) for c in columns]
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        quoted = ", ".join(f'"{c}"' for c in columns)
        rows = source.execute(f"SELECT {quoted} FROM {table}")  # noqa: S608 - names from PRAGMA
        count = 0
        async with conn.cursor().copy(copy_sql) as copy:
            for lite_row in rows:
                await copy.write_row([f(v) for f, v in zip(convert, lite_row, strict=True)])
                count += 1
        return count


def _importer(pg_type: str) -> Callable[[Any], Any]:
    """How a SQLite value becomes a value of PostgreSQL type ``pg_type``."""
    if pg_type == "timestamp with time zone":
        return lambda v: None if v is None else datetime.fromisoformat(v)
    if pg_type == "boolean":
        return lambda v: None if v is None else bool(v)
    return lambda v: v
