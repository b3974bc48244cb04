"""``pollbridge leases``: which instance owns what, as text and as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.store import InstanceInfo
from bridge.store.postgres import PostgresStore
from bridge.store.sqlite import SQLiteStore
from tests.support.daemon import run_cli


def _config(tmp_path: Path, state: str) -> Path:
    path = tmp_path / "pollbridge.toml"
    path.write_text(f'[bridge]\nstate = "{state}"\n')
    return path


async def test_a_sqlite_state_has_no_leases(tmp_path):
    """With SQLite, leases says there is a single instance (and creates nothing without state)."""
    config = str(_config(tmp_path, str(tmp_path / "s.db")))
    missing = run_cli("leases", "--config", config)
    assert missing.returncode == 0, missing.stderr
    assert "no state yet" in missing.stderr
    assert not (tmp_path / "s.db").exists()
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    await store.close()
    result = run_cli("leases", "--config", config)
    assert result.returncode == 0, result.stderr
    assert "single instance" in result.stdout


@pytest.mark.postgres
async def test_leases_lists_instances_sources_and_orphans(tmp_path, pg_url):
    """Live instances with their sources, and sources whose owner is gone, are listed."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        alive = InstanceInfo("hostA-1-aaaaaa", "hostA", 1, datetime.now(UTC))
        await store.heartbeat(alive, [], 30)
        await store.acquire_source_lease("orders", alive.id, 30)
        await store.acquire_source_lease("users", alive.id, 30)
        await store.acquire_source_lease("invoices", "hostB-2-bbbbbb", 0.01)
    finally:
        await store.close()
    config = str(_config(tmp_path, pg_url))

    text = run_cli("leases", "--config", config)
    assert text.returncode == 0, text.stderr
    assert "hostA-1-aaaaaa (alive, pid 1 on hostA" in text.stdout
    assert "sources (2): orders, users" in text.stdout
    assert "unowned (taken at the next tick): invoices" in text.stdout

    as_json = run_cli("leases", "--json", "--config", config)
    data = json.loads(as_json.stdout)
    assert [(i["id"], i["sources"], i["alive"]) for i in data["instances"]] == [
        ("hostA-1-aaaaaa", ["orders", "users"], True)
    ]
    assert data["unowned_sources"] == ["invoices"]
    leases = {lease["source"]: lease for lease in data["leases"]}
    assert sorted(leases) == ["invoices", "orders", "users"]
    assert leases["invoices"]["owner"] == "hostB-2-bbbbbb"
    orders = leases["orders"]
    assert orders["owner"] == "hostA-1-aaaaaa"
    acquired = datetime.fromisoformat(orders["acquired_at"])
    expires = datetime.fromisoformat(orders["expires_at"])
    assert 29 <= (expires - acquired).total_seconds() <= 31
