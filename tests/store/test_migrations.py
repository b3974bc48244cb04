"""Schema migrations: a version 1 state file is upgraded in place."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlite_utils

from bridge.store.base import SCHEMA_VERSION
from bridge.store.sqlite import MIGRATIONS, SQLiteStore


def _old_state(path: Path, version: int, *sql: str, migrations: int = 0) -> None:
    """Make ``path`` a state file at schema ``version``: migrations 1 to ``migrations`` applied
    (0: the file as it is), then ``sql``, the way that version left files."""
    conn = sqlite3.connect(path)
    for number in range(1, migrations + 1):
        step = MIGRATIONS[number]
        if isinstance(step, str):
            conn.executescript(step)
        else:
            step(sqlite_utils.Database(conn))
    for statement in sql:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


@asynccontextmanager
async def _opened(path: Path) -> AsyncIterator[SQLiteStore]:
    """The store on ``path``, opened (and so migrated) for the block."""
    store = SQLiteStore(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _current_state(path: Path) -> None:
    """A state file at today's schema, to take back to an older one."""
    async with _opened(path):
        pass


def _schema_version(store: SQLiteStore) -> int:
    return int(store.conn.execute("PRAGMA user_version").fetchone()[0])


async def test_version_1_file_gains_accept_requested(tmp_path):
    """Migration 2 adds sources.accept_requested (default off) and keeps existing rows."""
    path = tmp_path / "state.db"
    _old_state(path, 1, "INSERT INTO sources (name, item_count) VALUES ('s', 7)", migrations=1)
    async with _opened(path) as store:
        state = await store.get_source_state("s")
        assert state is not None and state.item_count == 7 and state.accept_requested is False
        await store.update_source_state("s", accept_requested=True)
        state = await store.get_source_state("s")
        assert state is not None and state.accept_requested is True
        version = _schema_version(store)
    assert version == SCHEMA_VERSION >= 2


async def test_version_5_file_gains_list_hash_and_keeps_items(tmp_path):
    """Migration 6 adds items.list_hash (null: no list entry remembered) and keeps the items."""
    path = tmp_path / "state.db"
    await _current_state(path)
    _old_state(
        path,
        5,
        "ALTER TABLE items DROP COLUMN list_hash",
        # and what migrations 7 and 8 add: this is a version 5 file
        "ALTER TABLE events DROP COLUMN type_name",
        "DROP TABLE seen_keys",
        "DROP TABLE missing_items",
        "ALTER TABLE sources DROP COLUMN cursor",
        "ALTER TABLE sources DROP COLUMN reconciled_at",
        "INSERT INTO items (source, key_text, key, hash, item, updated_at) "
        "VALUES ('s', 'a', '\"a\"', 'h1', '{}', '2025-01-01T00:00:00+00:00')",
    )
    async with _opened(path) as store:
        snap = await store.load_hashes("s", list_hashes=True)
        version = _schema_version(store)
    assert (snap.hashes, snap.list_hashes) == ({"a": "h1"}, {})
    assert version == SCHEMA_VERSION >= 6


async def test_version_6_file_gains_seen_keys_missing_counts_and_named_events(tmp_path):
    """Migration 7: an existing state keeps its events (unnamed) and can track seen keys and
    missing counts."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from bridge.models import Change
    from bridge.store import PollCommit, SeenUpdate

    path = tmp_path / "state.db"
    _old_state(
        path,
        6,
        "INSERT INTO events (id, source, key_text, key, type, timestamp, changes) VALUES "
        "('evt_old', 's', 'k', '\"k\"', 'created', '2025-01-01T00:00:00+00:00', '[]')",
        migrations=6,
    )
    at = datetime(2025, 2, 1, tzinfo=UTC)
    async with _opened(path) as store:
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


async def test_version_7_file_gains_the_incremental_cursor(tmp_path):
    """Migration 8 adds sources.cursor and reconciled_at (none yet) and keeps the sources."""
    path = tmp_path / "state.db"
    async with _opened(path) as store:
        await store.update_source_state("s", item_count=3)
    _old_state(
        path,
        7,
        "ALTER TABLE sources DROP COLUMN cursor",
        "ALTER TABLE sources DROP COLUMN reconciled_at",
    )
    async with _opened(path) as store:
        state = await store.get_source_state("s")
    assert state is not None and state.item_count == 3
    assert (state.cursor, state.reconciled_at) == (None, None)


async def test_version_2_file_gains_the_listener_columns(tmp_path):
    """Migration 3 adds listeners.failing_since and deliveries.coalesced_into, keeping rows."""
    path = tmp_path / "old.db"
    _old_state(
        path,
        2,
        "INSERT INTO listeners (name, paused, paused_reason) VALUES ('hooks', 1, '410')",
        migrations=2,
    )
    async with _opened(path) as store:
        (state,) = await store.list_listener_states()
        assert (state.name, state.paused, state.paused_reason) == ("hooks", True, "410")
        assert state.failing_since is None
        columns = {r[1] for r in store.conn.execute("PRAGMA table_info(deliveries)")}
        assert "coalesced_into" in columns
        assert _schema_version(store) == SCHEMA_VERSION
