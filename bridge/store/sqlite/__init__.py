"""The embedded default store: one SQLite file in WAL mode, owned by one daemon.

By role: ``snapshots`` (sources, polls), ``queue`` (deliveries, claims, attempts), ``inspection``
(what the CLI reads, operator actions, runtime records), ``schema`` (migrations), ``lock`` (the
one-daemon-per-file lock) and ``_base`` (the connection and its worker thread).

Two libraries on one connection: sqlite-utils where it is good (schema migrations with
``add_column``/``transform``, inspection reads such as ``rows_where``), plain ``sqlite3`` on
the hot path (polls, claims, attempts), where every statement and transaction is ours.
"""

from __future__ import annotations

from bridge.store.sqlite._base import iso, parse_iso, row_to_event
from bridge.store.sqlite.inspection import SQLiteInspection
from bridge.store.sqlite.lock import claim_state_lock
from bridge.store.sqlite.queue import SQLiteQueue
from bridge.store.sqlite.schema import MIGRATIONS
from bridge.store.sqlite.snapshots import SQLiteSnapshots


class SQLiteStore(SQLiteSnapshots, SQLiteQueue, SQLiteInspection):
    """The SQLite backend of :class:`bridge.store.base.Store`."""


__all__ = [
    "MIGRATIONS",
    "SQLiteStore",
    "claim_state_lock",
    "iso",
    "parse_iso",
    "row_to_event",
]
