"""An incremental source end to end: the real daemon against a local "changed since" API."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess, eventually, run_cli
from tests.support.incremental_api import ChangedSinceAPI
from tests.support.servers import TestServer, serve

pytestmark = pytest.mark.e2e

INCREMENTAL = """
mode = "incremental"
params = { per_page = 10 }
paginate = { kind = "next_url", next = "$.next_page" }
[sources.incremental]
cursor = "$.updated_at"
param = "updated_since"
lookback = "1s"
"""


@pytest.fixture
def api():
    handler = ChangedSinceAPI(count=25, per_page=10)
    with serve(handler) as server:
        yield handler, server


def _config(tmp_path: Path, api_url: str, hook_url: str) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("tickets", api_url, every="300ms", items="$.tickets[*]", raw=INCREMENTAL),
        listener("hooks", hook_url, retry=["200ms"] * 3),
        shutdown_grace="5s",
    )


def _status(config: Path) -> dict[str, Any]:
    """The source's row of ``status --json`` (empty until the daemon created the state)."""
    out = run_cli("status", "--json", "--config", str(config))
    if out.returncode != 0:
        return {}
    rows = json.loads(out.stdout)["sources"]
    return dict(rows[0]) if rows else {}


def _updates(receiver: TestServer) -> Counter[str]:
    with receiver.lock:
        bodies = [r.json() for r in receiver.requests]
    return Counter(b["key"] for b in bodies if b["type"] == "item.updated")


def test_check_and_a_dry_run_show_the_cursor(tmp_path, api, receiver):
    """check lists the incremental settings; poll (a dry run) says what it would send and
    store; status shows the stored cursor."""
    handler, server = api
    config = _config(tmp_path, server.url("/tickets"), receiver.url("/hooks"))
    check = run_cli("check", "--config", str(config))
    assert check.returncode == 0, check.stderr
    assert (
        "incremental: cursor $.updated_at (iso8601) sent as param updated_since, start now, "
        "lookback 1s, reconcile never"
    ) in check.stdout
    committed = run_cli("poll", "tickets", "--commit", "--config", str(config))
    assert committed.returncode == 0, committed.stderr
    assert "asked for the complete list (first poll)" in committed.stderr
    assert "stored cursor 2026-03-01T09:00:25.000000+00:00" in committed.stderr
    handler.change(4, status="solved")
    dry = run_cli("poll", "tickets", "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert "sent updated_since = 2026-03-01T09:00:24Z" in dry.stderr
    assert "would store cursor 2026-03-01T09:00:26.000000+00:00" in dry.stderr
    assert [json.loads(line)["key"] for line in dry.stdout.splitlines()] == ["4"]
    status = _status(config)
    assert status["cursor"] == "2026-03-01T09:00:25.000000+00:00"
    text = run_cli("status", "--config", str(config)).stdout
    assert "tickets: cursor 2026-03-01T09:00:25.000000+00:00" in text


def test_a_kill_between_pages_and_the_commit_loses_nothing(tmp_path, api, receiver):
    """SIGKILL while a window's third page is being fetched: nothing of that poll was
    committed, so the restarted daemon asks from the same cursor and every change arrives,
    each once."""
    handler, server = api
    config = _config(tmp_path, server.url("/tickets"), receiver.url("/hooks"))
    with DaemonProcess(config) as daemon:
        eventually(lambda: _status(config).get("cursor"), 30, "the baseline", daemon.output)
        release = handler.hold_page(3)
        for i in range(1, 26):
            handler.change(i, status="solved")
        assert handler.waiting[3].wait(30), daemon.output()
        daemon.kill()
    cursor = _status(config)["cursor"]
    assert cursor == "2026-03-01T09:00:25.000000+00:00"
    with handler.lock:
        handler.held.clear()
    release.set()
    handler.change(26, subject="after the crash", status="open")
    with DaemonProcess(config) as daemon:
        eventually(
            lambda: len(_updates(receiver)) == 25 and len(receiver.requests) >= 26,
            30,
            "every change delivered",
            daemon.output,
        )
        # the restarted daemon re-asked from the old cursor (minus the 1s lookback)
        daemon.wait_output(r"asked for the window since 2026-03-01T09:00:24Z")
        assert daemon.terminate() == 0, daemon.output()
    updates = _updates(receiver)
    assert set(updates) == {str(i) for i in range(1, 26)}
    assert set(updates.values()) == {1}
    created = [r.json()["key"] for r in receiver.requests if r.json()["type"] == "item.created"]
    assert created == ["26"]
    assert _status(config)["cursor"] == "2026-03-01T09:00:51.000000+00:00"
