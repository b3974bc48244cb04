"""Schema migrations: a version 1 state file is upgraded in place."""

from __future__ import annotations

import sqlite3

from bridge.store.base import SCHEMA_VERSION
from bridge.store.sqlite import MIGRATIONS, SQLiteStore


async def test_version_1_file_gains_accept_requested(tmp_path):
    """Migration 2 adds sources.accept_requested (default off) and keeps existing rows."""
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[1])
    conn.execute("INSERT INTO sources (name, item_count) VALUES ('s', 7)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        state = await store.get_source_state("s")
        assert state is not None and state.item_count == 7 and state.accept_requested is False
        await store.update_source_state("s", accept_requested=True)
        state = await store.get_source_state("s")
        assert state is not None and state.accept_requested is True
        version = store.conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        await store.close()
    assert version == SCHEMA_VERSION >= 2


async def test_version_5_file_gains_list_hash_and_keeps_items(tmp_path):
    """Migration 6 adds items.list_hash (null: no list entry remembered) and keeps the items."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE items DROP COLUMN list_hash")
    # and what migrations 7 and 8 add: this is a version 5 file
    conn.execute("ALTER TABLE events DROP COLUMN type_name")
    conn.execute("DROP TABLE seen_keys")
    conn.execute("DROP TABLE missing_items")
    conn.execute("ALTER TABLE sources DROP COLUMN cursor")
    conn.execute("ALTER TABLE sources DROP COLUMN reconciled_at")
    conn.execute(
        "INSERT INTO items (source, key_text, key, hash, item, updated_at) "
        "VALUES ('s', 'a', '\"a\"', 'h1', '{}', '2025-01-01T00:00:00+00:00')"
    )
    conn.execute("PRAGMA user_version = 5")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        snap = await store.load_hashes("s", list_hashes=True)
        version = store.conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        await store.close()
    assert (snap.hashes, snap.list_hashes) == ({"a": "h1"}, {})
    assert version == SCHEMA_VERSION >= 6


async def test_version_6_file_gains_seen_keys_missing_counts_and_named_events(tmp_path):
    """Migration 7: an existing state keeps its events (unnamed) and can track seen keys and
    missing counts."""
    from dataclasses import replace
    from datetime import UTC, datetime

    import sqlite_utils

    from bridge.models import Change
    from bridge.store import PollCommit, SeenUpdate

    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[1])
    for version in range(2, 7):
        step = MIGRATIONS[version]
        if isinstance(step, str):
            conn.executescript(step)
        else:
            step(sqlite_utils.Database(conn))
    conn.execute(
        "INSERT INTO events (id, source, key_text, key, type, timestamp, changes) VALUES "
        "('evt_old', 's', 'k', '\"k\"', 'created', '2025-01-01T00:00:00+00:00', '[]')"
    )
    conn.execute("PRAGMA user_version = 6")
    conn.commit()
    conn.close()
    at = datetime(2025, 2, 1, tzinfo=UTC)
    store = SQLiteStore(path)
    await store.open()
    try:
        old = await store.get_event("evt_old")
        assert old is not None and old.name is None
        change = Change("created", "e", "e", None, {"id": "e"}, [], "h", "github.event")
        base = PollCommit("feed", at, 0.0, [], [], [change], [[]], 1, "fp")
        (event,) = await store.commit_poll(
            replace(base, seen=SeenUpdate(add=["e"]), missing={"gone": 1})
        )
        assert event.name == "github.event"
        assert (await store.load_seen("feed")).first_seen == {"e": at}
        assert await store.load_missing("feed") == {"gone": 1}
    finally:
        await store.close()


async def test_version_7_file_gains_the_incremental_cursor(tmp_path):
    """Migration 8 adds sources.cursor and reconciled_at (none yet) and keeps the sources."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    await store.update_source_state("s", item_count=3)
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE sources DROP COLUMN cursor")
    conn.execute("ALTER TABLE sources DROP COLUMN reconciled_at")
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        state = await store.get_source_state("s")
    finally:
        await store.close()
    assert state is not None and state.item_count == 3
    assert (state.cursor, state.reconciled_at) == (None, None)
