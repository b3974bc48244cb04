"""Storage faults: a locked database and a full disk fail the poll cleanly; the daemon carries on.

The daemon runs in-process against a real API and receiver on 127.0.0.1 and a real SQLite file;
the faults are real SQLite conditions (another connection's write lock, ``max_page_count``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.config import load_config
from bridge.daemon import Daemon
from bridge.store.sqlite import SQLiteStore
from tests.support.configs import listener, source, write_config
from tests.support.servers import ItemsAPI, TestServer


def _config(tmp_path: Path, api_url: str, hook_url: str) -> Any:
    path = write_config(
        tmp_path / "pollbridge.toml",
        source("orders", api_url),
        listener("hooks", hook_url, retry=["100ms"] * 5),
        shutdown_grace="2s",
    )
    return load_config(path, env={})


def _counts(path: str) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {
            t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608
            for t in ("items", "events", "deliveries")
        }


async def _until(predicate: Callable[[], bool], timeout_s: float = 15) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.05)


def _integrity(path: str) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


class _Harness:
    def __init__(self, tmp_path: Path, api: ItemsAPI, api_server: TestServer, hooks: TestServer):
        self.config = _config(tmp_path, api_server.url("/orders"), hooks.url("/hooks"))
        self.store = SQLiteStore(self.config.state_location, busy_timeout_s=0.2)
        self.daemon = Daemon(self.config, store=self.store)
        self.api = api
        self.api_server = api_server
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.daemon.run())
        await _until(lambda: self.daemon.stats.polls_ok >= 1)

    async def polls_after(self, n: int) -> None:
        """Wait until ``n`` more polls have reached the API."""
        seen = len(self.api_server.requests)
        await _until(lambda: len(self.api_server.requests) >= seen + n)

    async def stop(self) -> int:
        self.daemon.request_stop()
        assert self.task is not None
        return await self.task


@pytest.fixture
def harness(tmp_path, items_api, receiver) -> _Harness:
    api, api_server = items_api
    api.set({"id": 1, "v": 0}, {"id": 2, "v": 0})
    return _Harness(tmp_path, api, api_server, receiver)


async def test_locked_database_fails_polls_cleanly_then_recovers(harness, receiver, caplog):
    """While another process holds the write lock, polls fail and say why; then all arrives."""
    caplog.set_level(logging.WARNING, logger="pollbridge")
    await harness.start()
    path = harness.config.state_location
    before = _counts(path)

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        harness.api.set({"id": 1, "v": 1}, {"id": 3, "v": 0})
        await harness.polls_after(3)
        assert _counts(path) == before  # nothing half-written
        assert not harness.task.done()  # the daemon keeps running
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    await _until(lambda: len(receiver.requests) >= 3)
    code = await harness.stop()
    assert code == 0
    locked = [r.getMessage() for r in caplog.records if "database is locked" in r.getMessage()]
    assert locked, [r.getMessage() for r in caplog.records]
    assert "another process holds a write lock" in locked[0]
    assert "nothing was recorded, the next poll tries again" in locked[0]
    assert not [r for r in caplog.records if r.exc_info]  # said why, without a traceback
    types = sorted(r.json()["type"] for r in receiver.requests)
    assert types == ["item.created", "item.deleted", "item.updated"]
    assert _integrity(path) == "ok"


async def test_full_disk_fails_polls_cleanly_then_recovers(harness, receiver, caplog):
    """When the database cannot grow, the poll rolls back whole; after space frees up, all arrives."""
    caplog.set_level(logging.WARNING, logger="pollbridge")
    await harness.start()
    path = harness.config.state_location
    store = harness.store
    await store._run(lambda: store.conn.execute("PRAGMA max_page_count = 1").fetchall())
    pages = await store._run(lambda: store.conn.execute("PRAGMA max_page_count").fetchone()[0])
    before = _counts(path)

    # a poll that writes far more than one page more than the file has
    big = [{"id": i, "blob": "x" * 2000} for i in range(10, 60)]
    harness.api.set({"id": 1, "v": 1}, *big)
    await harness.polls_after(3)
    assert _counts(path) == before
    assert not harness.task.done()

    await store._run(lambda: store.conn.execute("PRAGMA max_page_count = 1073741823").fetchall())
    await _until(lambda: len(receiver.requests) >= 52)
    code = await harness.stop()
    assert code == 0
    assert pages > 0
    full = [r.getMessage() for r in caplog.records if "database or disk is full" in r.getMessage()]
    assert full, [r.getMessage() for r in caplog.records]
    assert "nothing was recorded" in full[0]
    assert not [r for r in caplog.records if r.exc_info]
    assert _counts(path)["events"] == before["events"] + 52
    assert _integrity(path) == "ok"
