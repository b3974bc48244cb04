"""``pollbridge migrate-state``: a SQLite state copied into PostgreSQL reads back the same."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bridge.store import Store
from bridge.store.postgres import PostgresStore
from bridge.store.sqlite import SQLiteStore
from tests.store.test_contract import FAILED, OK, T0, commit, created, item, updated
from tests.support.daemon import run_cli

pytestmark = pytest.mark.postgres


async def _fill(store: Store) -> None:
    a1, b1 = item("a", v=1), item(("x", "y"), v=1)
    await store.commit_poll(
        commit("orders", upserts=[a1, b1], changes=[created(a1), created(b1)], listeners=["h", "k"])
    )
    a2 = item("a", v=2)
    await store.commit_poll(
        commit("orders", at=T0 + timedelta(seconds=1), upserts=[a2], changes=[updated(a1, a2)])
    )
    due = await store.due_deliveries("h", 1e10, 10, [])
    await store.record_attempt(due[0].id, T0, OK, next_at=None)
    await store.record_attempt(due[1].id, T0, FAILED, next_at=T0.timestamp() + 60)
    await store.record_poll_failure("users", T0, 0.3, "HTTP 502")
    await store.set_listener_paused("k", True, "410 Gone", T0)


async def _snapshot(store: Store) -> dict[str, object]:
    return {
        "sources": await store.list_source_states(),
        "hashes": await store.load_hashes("orders"),
        "items": await store.load_items("orders", ["a", '["x","y"]']),
        "listeners": await store.list_listener_states(),
        "due": await store.due_deliveries("h", 1e10, 10, []),
        "due_k": await store.due_deliveries("k", 1e10, 10, []),
        "pending": await store.pending_count(),
    }


async def test_migrate_state_copies_everything(tmp_path: Path, pg_url: str):
    """Snapshots, events, deliveries, attempts, source and listener state all arrive intact."""
    db = tmp_path / "pollbridge.db"
    lite = SQLiteStore(db)
    await lite.open()
    await _fill(lite)
    expected = await _snapshot(lite)
    await lite.close()

    result = run_cli("migrate-state", "--from", str(db), "--to", pg_url)
    assert result.returncode == 0, result.stderr
    assert "3 events" in result.stdout and "5 deliveries" in result.stdout

    pg = PostgresStore(pg_url)
    await pg.open()
    try:
        assert await _snapshot(pg) == expected
        # new rows continue after the copied ones
        c1 = item("c", v=1)
        (event,) = await pg.commit_poll(commit("orders", upserts=[c1], changes=[created(c1)]))
        assert event.seq > max(d.event.seq for d in expected["due"])  # type: ignore[attr-defined]
    finally:
        await pg.close()

    again = run_cli("migrate-state", "--from", str(db), "--to", pg_url)
    assert again.returncode == 74
    assert "already holds pollbridge state" in again.stderr


def test_migrate_state_refuses_bad_arguments(tmp_path: Path, pg_url: str):
    """A missing file or a non-PostgreSQL target is refused before anything is written."""
    missing = run_cli("migrate-state", "--from", str(tmp_path / "nope.db"), "--to", pg_url)
    assert missing.returncode == 74
    assert "no such SQLite state file" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
    wrong = run_cli(
        "migrate-state", "--from", str(tmp_path / "x.db"), "--to", str(tmp_path / "o.db")
    )
    assert wrong.returncode == 64
    assert "postgresql://" in wrong.stderr
