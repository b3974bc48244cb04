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


async def test_version_6_file_gains_the_incremental_cursor(tmp_path):
    """Migration 7 adds sources.cursor and reconciled_at (none yet) and keeps the sources."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.open()
    await store.update_source_state("s", item_count=3)
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE sources DROP COLUMN cursor")
    conn.execute("ALTER TABLE sources DROP COLUMN reconciled_at")
    conn.execute("PRAGMA user_version = 6")
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
