"""The SQLite schema: one migration per version, applied by the daemon in order.

The migrations up to 4 are SQL scripts; later ones use sqlite-utils, whose ``add_column`` and
``transform`` are what it is good at. The hot path (polls, claims, attempts) is plain sqlite3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge.store.base import SCHEMA_VERSION

if TYPE_CHECKING:
    import sqlite_utils


def _add_claimed_at(db: sqlite_utils.Database) -> None:
    db.table("deliveries").add_column("claimed_at", str)


def _add_list_hash(db: sqlite_utils.Database) -> None:
    db.table("items").add_column("list_hash", str)


def _add_seen_keys_and_missing(db: sqlite_utils.Database) -> None:
    # an append source's event type when it is not item.<type> (e.g. github.event)
    db.table("events").add_column("type_name", str)
    # append sources remember the keys they have seen (bounded by age and count), not items
    db.table("seen_keys").create(
        {"source": str, "key_text": str, "first_seen": str},
        pk=("source", "key_text"),
        not_null={"source", "key_text", "first_seen"},
    )
    # confirm_deletes: how many polls in a row each pending item has been missing
    db.table("missing_items").create(
        {"source": str, "key_text": str, "polls": int},
        pk=("source", "key_text"),
        not_null={"source", "key_text", "polls"},
    )


def _add_incremental_state(db: sqlite_utils.Database) -> None:
    db.table("sources").add_column("cursor", str)
    db.table("sources").add_column("reconciled_at", str)


MIGRATIONS: dict[int, str | Callable[[sqlite_utils.Database], None]] = {
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
    # detail sources: the hash of an item's list entry, so an unchanged entry is not re-fetched
    6: _add_list_hash,
    # append sources (seen keys, named event types) and confirmed deletes (missing counts)
    7: _add_seen_keys_and_missing,
    # incremental sources: the cursor and the last complete list, state like the snapshot
    8: _add_incremental_state,
}

assert max(MIGRATIONS) == SCHEMA_VERSION  # noqa: S101 - a programming error, caught by any test

STATE_INDEX = {
    "pending": "deliveries_due",
    "dead": "deliveries_dead",
    "delivered": "deliveries_state",
}
"""The index that counts each delivery state without reading the others."""
