"""``pollbridge run`` as a subprocess against a real changing API and a real receiver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from bridge.core.signing import generate_secret
from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess, run_cli
from tests.support.servers import Reply

pytestmark = pytest.mark.e2e


def _config(tmp_path: Path, api_url: str, hook_url: str, secret: str, extra: str = "") -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("orders", api_url, every="300ms", ignore=["$.seen"]),
        listener("hooks", hook_url, secret=secret, retry=["200ms"] * 3, raw=extra),
        shutdown_grace="5s",
    )


def test_changes_arrive_signed_with_exact_body(tmp_path, items_api, receiver):
    """Every created/updated/deleted change arrives once, signed, with the documented body."""
    api, api_server = items_api
    api.set({"id": 1, "status": "open", "seen": 1}, {"id": 2, "status": "open", "seen": 1})
    secret = generate_secret()
    config = _config(tmp_path, api_server.url("/orders"), receiver.url("/hooks"), secret)
    with DaemonProcess(config) as daemon:
        api_server.wait_count(1)
        api.set({"id": 1, "status": "shipped", "seen": 2}, {"id": 3, "status": "new", "seen": 1})
        reqs = receiver.wait_count(3)
        code = daemon.terminate()
    assert code == 0, daemon.output()
    bodies = [r.json() for r in reqs]
    by_type = {b["type"]: b for b in bodies}
    assert set(by_type) == {"item.created", "item.updated", "item.deleted"}
    updated = by_type["item.updated"]
    assert updated["source"] == "orders"
    assert updated["key"] == "1"
    assert updated["data"] == {
        "before": {"id": 1, "status": "open", "seen": 1},
        "after": {"id": 1, "status": "shipped", "seen": 2},
        "changes": [{"op": "replace", "path": "/status", "value": "shipped"}],
    }
    assert by_type["item.deleted"]["data"]["after"] is None
    assert by_type["item.created"]["data"]["before"] is None
    wh = Webhook(secret)
    for r in reqs:
        assert r.headers["content-type"] == "application/json"
        assert r.headers["user-agent"].startswith("pollbridge/")
        assert r.headers["webhook-id"] == json.loads(r.body)["id"]
        assert r.headers["webhook-id"].startswith("evt_")
        wh.verify(r.body, r.headers)  # raises if the signature is wrong


def test_run_once_exit_codes(tmp_path, items_api, receiver):
    """``run --once`` exits 0 when all is delivered and 1 when a poll failed."""
    api, api_server = items_api
    api.set({"id": 1})
    config = _config(tmp_path, api_server.url("/orders"), receiver.url("/hooks"), generate_secret())
    first = run_cli("run", "--once", "--config", str(config))
    assert first.returncode == 0, first.stderr
    api.set({"id": 1}, {"id": 2})
    second = run_cli("run", "--once", "--config", str(config))
    assert second.returncode == 0, second.stderr
    assert [r.json()["key"] for r in receiver.requests] == ["2"]
    api_server.handler = lambda _r: Reply(500, "boom")
    third = run_cli("run", "--once", "--config", str(config))
    assert third.returncode == 1
    assert "HTTP 500" in third.stderr
