"""The shared store: PostgreSQL, for several pollbridge instances on one database.

Same tables and semantics as the SQLite store, plus what lets instances share the work with the
database as the only coordinator: ``source_leases`` (one poller per source, a fencing token on
every commit), claims on deliveries (``SELECT ... FOR UPDATE SKIP LOCKED``), ``instances``
(heartbeats) and ``LISTEN/NOTIFY`` to wake dispatchers when a poll commits.

Lease and claim expiry use the database's clock, so instances on machines whose clocks disagree
still agree on who owns what. The schema is the first entry of ``search_path``; set it in the URL
with ``?options=-csearch_path%3Dname`` (it is created if missing). Every call is bounded
(``_conn``): a network that goes silent fails calls, it does not hang them.

By role: ``snapshots``, ``queue``, ``coordination``, ``inspection``, ``migrate`` (from SQLite),
``schema`` (migrations), ``_base`` (the pool) and ``_conn`` (bounded connections).
"""

from __future__ import annotations

from bridge.core.redaction import redact_url
from bridge.store.base import SCHEMA_VERSION
from bridge.store.postgres._conn import CALL_TIMEOUT_S, bounded_conninfo, schema_of
from bridge.store.postgres.coordination import PostgresCoordination
from bridge.store.postgres.inspection import PostgresInspection
from bridge.store.postgres.migrate import PostgresImport
from bridge.store.postgres.queue import PostgresQueue
from bridge.store.postgres.snapshots import PostgresSnapshots


class PostgresStore(
    PostgresSnapshots, PostgresQueue, PostgresCoordination, PostgresInspection, PostgresImport
):
    """The PostgreSQL backend of :class:`bridge.store.base.Store` (psycopg 3, async, pooled)."""


__all__ = [
    "CALL_TIMEOUT_S",
    "SCHEMA_VERSION",
    "PostgresStore",
    "bounded_conninfo",
    "redact_url",
    "schema_of",
]
