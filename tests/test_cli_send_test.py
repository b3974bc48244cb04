"""`pollbridge send-test LISTENER`: one signed test webhook through the real sender."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from bridge.core.signing import generate_secret
from tests.support.configs import listener, source, write_config
from tests.support.daemon import run_cli
from tests.support.servers import Reply

pytestmark = pytest.mark.e2e


def _config(tmp_path: Path, api_url: str, hook_url: str, secret: str, extra: str = "") -> Path:
    hook = listener(
        "hooks", hook_url, secret=secret, headers={"X-Team": "billing"}, timeout="7s", raw=extra
    )
    return write_config(
        tmp_path / "pollbridge.toml",
        source("orders", api_url, every="1m"),
        hook,
        shutdown_grace=None,
    )


def test_send_test_without_a_state_sends_a_signed_sample_and_records_nothing(tmp_path, receiver):
    """With no stored item a sample event is sent, signed and with the listener's headers;
    the request and the answer are printed, and no state file appears."""
    secret = generate_secret()
    config = _config(tmp_path, "http://127.0.0.1:9/o", receiver.url("/hooks"), secret)
    res = run_cli("send-test", "hooks", "--config", str(config))
    assert res.returncode == 0, res.stderr
    (req,) = receiver.requests
    Webhook(secret).verify(req.body, req.headers)  # raises if the signature is wrong
    body = req.json()
    assert body["type"] == "item.updated" and body["source"] == "orders"
    assert body["key"] == "sample-1"
    assert body["data"]["changes"] == [{"op": "replace", "path": "/status", "value": "paid"}]
    assert req.headers["x-team"] == "billing"
    assert f"POST {receiver.url('/hooks')}" in res.stdout
    assert f"webhook-id: {body['id']}" in res.stdout
    assert "webhook-signature: v1," in res.stdout
    assert "-> HTTP 204 in " in res.stdout
    assert "a sample (no stored item yet); nothing is recorded" in res.stdout
    assert "timeout 7s" in res.stdout
    assert secret not in res.stdout
    assert not (tmp_path / "state.db").exists()


def test_send_test_uses_the_sources_last_stored_item(tmp_path, items_api, receiver):
    """With a snapshot, the event is built from the most recently changed stored item."""
    api, server = items_api
    secret = generate_secret()
    config = _config(
        tmp_path, server.url("/o"), receiver.url("/hooks"), secret, 'events = ["deleted"]'
    )
    api.set({"id": 1, "status": "open"}, {"id": 2, "status": "open"})
    assert run_cli("poll", "orders", "--commit", "--config", str(config)).returncode == 0
    api.set({"id": 1, "status": "open"}, {"id": 2, "status": "shipped"})
    assert run_cli("poll", "orders", "--commit", "--config", str(config)).returncode == 0
    events_before = json.loads(run_cli("events", "--json", "--config", str(config)).stdout)
    res = run_cli("send-test", "hooks", "--type", "item.created", "--config", str(config))
    assert res.returncode == 0, res.stderr
    (req,) = receiver.requests
    body = req.json()
    assert body["type"] == "item.created" and body["key"] == "2"
    assert body["data"] == {"before": None, "after": {"id": 2, "status": "shipped"}, "changes": []}
    assert "built from the stored item 2 of orders" in res.stdout
    assert json.loads(run_cli("events", "--json", "--config", str(config)).stdout) == events_before
    deliveries = json.loads(run_cli("deliveries", "--json", "--config", str(config)).stdout)
    assert deliveries == []  # the listener takes only deletions: nothing was queued, before or now


def test_send_test_reports_a_failing_receiver(tmp_path, receiver):
    """A refusing receiver is exit 1, with its status and the start of its answer."""
    receiver.handler = lambda _r: Reply(401, "bad signature, says the receiver")
    config = _config(tmp_path, "http://127.0.0.1:9/o", receiver.url("/hooks"), generate_secret())
    res = run_cli("send-test", "hooks", "--type", "deleted", "--config", str(config))
    assert res.returncode == 1
    assert "-> HTTP 401 in " in res.stdout and "FAILED: HTTP 401" in res.stdout
    assert "response: bad signature, says the receiver" in res.stdout
    assert receiver.requests[0].json()["type"] == "item.deleted"


def test_send_test_unknown_listener(tmp_path):
    """An unknown listener is exit 1, naming the known ones."""
    config = _config(tmp_path, "http://127.0.0.1:9/o", "http://127.0.0.1:9/h", generate_secret())
    res = run_cli("send-test", "nosuch", "--config", str(config))
    assert res.returncode == 1
    assert "no listener named 'nosuch' (known: hooks)" in res.stderr


def test_send_test_renders_the_listeners_template(tmp_path, receiver):
    """A template listener gets its own rendered body and content type, as the daemon sends."""
    extra = (
        'content_type = "text/plain"\ntemplate = "Order {{ key }} is now {{ data.after.status }}"'
    )
    config = _config(
        tmp_path, "http://127.0.0.1:9/o", receiver.url("/hooks"), generate_secret(), extra
    )
    res = run_cli("send-test", "hooks", "--config", str(config))
    assert res.returncode == 0, res.stderr
    (req,) = receiver.requests
    assert req.body == b"Order sample-1 is now paid"
    assert req.headers["content-type"] == "text/plain"
    assert "(listener hooks: template, timeout 7s)" in res.stdout
