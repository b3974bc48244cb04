"""Listener features end to end: the real daemon, a changing API and a recording receiver."""

from __future__ import annotations

import base64
import itertools
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_structured
from cloudevents.core.formats.json import JSONFormat
from standardwebhooks.webhooks import Webhook

from bridge.core.signing import decode_public_key, generate_secret
from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess, run_cli
from tests.support.servers import Reply, Request, TestServer
from tests.support.state import StateView

pytestmark = pytest.mark.e2e


def _config(tmp_path: Path, api_url: str, *listeners: str, **source_fields: Any) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml", source("orders", api_url, **source_fields), *listeners
    )


def _one_change(
    config: Path, items_api: Any, receiver: TestServer, *items: Any
) -> tuple[Request, str]:
    """Run the daemon until the change to ``items`` after its first poll is delivered: the one
    webhook that arrived, and the daemon's output."""
    api, api_server = items_api
    with DaemonProcess(config) as daemon:
        api_server.wait_count(1)
        api.set(*items)
        (req,) = receiver.wait_count(1)
        assert daemon.terminate() == 0, daemon.output()
    return req, daemon.output()


def _view(tmp_path: Path) -> StateView:
    return StateView(tmp_path / "state.db")


def _on(path: str):
    return lambda rs: [r for r in rs if r.path == path]


def _wait_paths(receiver: TestServer, counts: dict[str, int], timeout_s: float = 15) -> None:
    def enough(rs: list[Request]) -> bool:
        return all(sum(r.path == p for r in rs) >= n for p, n in counts.items())

    receiver.wait_for(enough, timeout_s)


def test_filters_on_fields_match_and_events(tmp_path, items_api, receiver):
    """Each filter passes exactly its events, and a filtered-out event gets no delivery row."""
    api, api_server = items_api
    api.set(
        {"id": 1, "status": "open", "note": "", "total": 50},
        {"id": 2, "status": "open", "note": "", "total": 500},
    )
    config = _config(
        tmp_path,
        api_server.url("/orders"),
        listener("status", receiver.url("/status"), on_fields=["/status"]),
        listener("big", receiver.url("/big"), match="$.data.after[?(@.total > 100)]"),
        listener("deletes", receiver.url("/deletes"), events=["deleted"]),
        listener("all", receiver.url("/all")),
    )
    with DaemonProcess(config) as daemon:
        api_server.wait_count(1)
        api.set(
            {"id": 1, "status": "open", "note": "call first", "total": 50},
            {"id": 2, "status": "shipped", "note": "", "total": 500},
            {"id": 3, "status": "open", "note": "", "total": 150},
        )
        _wait_paths(receiver, {"/all": 3})
        api.set(
            {"id": 1, "status": "open", "note": "call first", "total": 50},
            {"id": 2, "status": "shipped", "note": "", "total": 500},
        )
        _wait_paths(receiver, {"/all": 4, "/deletes": 1, "/status": 3, "/big": 2})
        assert daemon.terminate() == 0, daemon.output()

    def got(path: str) -> list[tuple[str, str]]:
        return sorted(
            (r.json()["type"], r.json()["key"]) for r in receiver.requests if r.path == path
        )

    assert got("/all") == [
        ("item.created", "3"),
        ("item.deleted", "3"),
        ("item.updated", "1"),
        ("item.updated", "2"),
    ]
    # on_fields filters updates only: item 1's note changed, not its status
    assert got("/status") == [("item.created", "3"), ("item.deleted", "3"), ("item.updated", "2")]
    assert got("/big") == [("item.created", "3"), ("item.updated", "2")]
    assert got("/deletes") == [("item.deleted", "3")]
    rows = dict(Counter(d.listener for d in _view(tmp_path).deliveries()))
    assert rows == {"all": 4, "status": 3, "big": 2, "deletes": 1}


def test_cloudevents_format_parses_with_the_sdk_and_stays_signed(tmp_path, items_api, receiver):
    """format = "cloudevents" sends a structured CloudEvent the SDK parses, still signed."""
    api, api_server = items_api
    api.set({"id": 7, "status": "open"})
    secret = generate_secret()
    hook = listener("ce", receiver.url("/ce"), format="cloudevents", secret=secret)
    config = _config(tmp_path, api_server.url("/orders"), hook)
    req, _output = _one_change(config, items_api, receiver, {"id": 7, "status": "paid"})
    assert req.headers["content-type"] == "application/cloudevents+json"
    event = from_structured(HTTPMessage(req.headers, req.body), JSONFormat())
    assert event.get_specversion() == "1.0"
    assert event.get_id() == req.headers["webhook-id"]
    assert event.get_id().startswith("evt_")
    assert event.get_source() == "pollbridge/orders"
    assert event.get_type() == "pollbridge.item.updated"
    assert event.get_subject() == "7"
    assert event.get_time() is not None
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == {
        "before": {"id": 7, "status": "open"},
        "after": {"id": 7, "status": "paid"},
        "changes": [{"op": "replace", "path": "/status", "value": "paid"}],
    }
    Webhook(secret).verify(req.body, req.headers)


SLACK_TEMPLATE = """{
  "text": {{ ("Order " ~ key ~ " is now " ~ data.after.status) | tojson }},
  "blocks": [
    {"type": "section",
     "text": {"type": "mrkdwn",
              "text": {{ ("*" ~ source ~ "* " ~ type ~ ": `" ~ (data.before.status or "new") ~ "` → `" ~ data.after.status ~ "`") | tojson }}}}
  ]
}
"""


def test_template_renders_a_slack_message_and_a_failing_template_goes_dead(
    tmp_path, items_api, receiver
):
    """A template_file renders a Slack body; a template error kills that delivery, not the daemon."""
    api, api_server = items_api
    api.set({"id": 1, "status": "open", "count": 1})
    (tmp_path / "slack.j2").write_text(SLACK_TEMPLATE)
    config = _config(
        tmp_path,
        api_server.url("/orders"),
        listener("slack", receiver.url("/slack"), template_file="slack.j2"),
        listener(
            "fragile",
            receiver.url("/fragile"),
            content_type="text/plain",
            template="per item: {{ 100 // data.after.count }}",
            retry=["100ms", "100ms"],
        ),
    )
    checked = run_cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "slack.j2" in checked.stdout
    with DaemonProcess(config) as daemon:
        api_server.wait_count(1)
        api.set({"id": 1, "status": "paid", "count": 0})
        receiver.wait_for(_on("/slack"))
        api.set({"id": 1, "status": "shipped", "count": 4})
        _wait_paths(receiver, {"/slack": 2, "/fragile": 1})
        assert daemon.terminate() == 0, daemon.output()
    slack = [r for r in receiver.requests if r.path == "/slack"]
    assert slack[0].headers["content-type"] == "application/json"
    assert slack[0].json() == {
        "text": "Order 1 is now paid",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "*orders* item.updated: `open` → `paid`"},
            }
        ],
    }
    assert slack[1].json()["text"] == "Order 1 is now shipped"
    fragile = [r for r in receiver.requests if r.path == "/fragile"]
    # the first update divides by zero: dead at once, never sent; the second one goes out
    assert [r.body for r in fragile] == [b"per item: 25"]
    assert fragile[0].headers["content-type"] == "text/plain"
    dead = [
        (d.attempts, d.last_error)
        for d in _view(tmp_path).deliveries(listener="fragile", state="dead")
    ]
    assert len(dead) == 1
    assert dead[0][0] == 1
    assert "ZeroDivisionError" in str(dead[0][1])
    assert "template, line 1" in str(dead[0][1])
    assert "ZeroDivisionError" in daemon.output()


def test_template_error_is_reported_by_check(tmp_path, items_api, receiver):
    """pollbridge check compiles templates and names the file and line of a syntax error."""
    _api, api_server = items_api
    (tmp_path / "bad.j2").write_text('{"text": "ok"}\n{% if type %}\n')
    config = _config(
        tmp_path,
        api_server.url("/orders"),
        listener("slack", receiver.url("/slack"), template_file="bad.j2"),
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 78
    assert "bad.j2" in result.stderr
    assert "line 2" in result.stderr
    assert 'listeners "slack"' in result.stderr


def test_rotation_sends_both_signatures_and_each_verifies(tmp_path, items_api, receiver):
    """secrets = [new, old] signs with both; receivers holding either secret accept the webhook."""
    api, api_server = items_api
    api.set({"id": 1})
    new, old = generate_secret(), generate_secret()
    hook = listener("hooks", receiver.url("/hooks"), secrets=[new, old])
    config = _config(tmp_path, api_server.url("/orders"), hook)
    req, output = _one_change(config, items_api, receiver, {"id": 1}, {"id": 2})
    signatures = req.headers["webhook-signature"].split(" ")
    assert [s.split(",")[0] for s in signatures] == ["v1", "v1"]
    assert Webhook(new).verify(req.body, req.headers)["key"] == "2"
    assert Webhook(old).verify(req.body, req.headers)["key"] == "2"
    assert new not in output and old not in output


def test_ed25519_signature_verifies_with_the_public_key(tmp_path, items_api, receiver):
    """signing_key sends v1a, verified by the receiver with the whpk_ key from `secret --asymmetric`."""
    api, api_server = items_api
    api.set({"id": 1})
    printed = run_cli("secret", "--asymmetric")
    assert printed.returncode == 0, printed.stderr
    lines = dict(line.split(" = ", 1) for line in printed.stdout.splitlines())
    signing_key = lines["signing_key"].split('"')[1]
    public_key = lines["public_key"].split('"')[1]
    assert signing_key.startswith("whsk_") and public_key.startswith("whpk_")
    secret = generate_secret()
    hook = listener("hooks", receiver.url("/hooks"), secret=secret, signing_key=signing_key)
    config = _config(tmp_path, api_server.url("/orders"), hook)
    req, output = _one_change(config, items_api, receiver, {"id": 1}, {"id": 2})
    assert signing_key not in output
    symmetric, asymmetric = req.headers["webhook-signature"].split(" ")
    assert symmetric.startswith("v1,") and asymmetric.startswith("v1a,")
    # what a receiver does with the public key alone (cryptography; docs/listeners.md shows it)
    signed = f"{req.headers['webhook-id']}.{req.headers['webhook-timestamp']}.".encode() + req.body
    decode_public_key(public_key).verify(base64.b64decode(asymmetric[4:]), signed)
    Webhook(secret).verify(req.body, req.headers)  # the v1 one still works


def test_rate_limit_spaces_requests(tmp_path, items_api, receiver):
    """rate = "5/s" lets at most one request out per 200 ms, even with many due at once."""
    api, api_server = items_api
    api.set(*({"id": i} for i in range(8)))
    config = _config(
        tmp_path,
        api_server.url("/orders"),
        listener("slow", receiver.url("/slow"), rate="5/s"),
        every="10s",
        baseline="emit",
    )
    with DaemonProcess(config) as daemon:
        reqs = receiver.wait_count(8, timeout_s=20)
        assert daemon.terminate() == 0, daemon.output()
    arrivals = [r.at for r in reqs]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # a token every 200 ms; network jitter can bunch two arrivals a little, never a burst
    assert min(gaps) > 0.05, gaps
    assert arrivals[-1] - arrivals[0] > 7 * 0.2 * 0.75, gaps


def test_breaker_opens_probes_and_closes_without_burning_retries(tmp_path, items_api, receiver):
    """After 3 failures the breaker holds the delivery (no attempts), probes, then delivers it."""
    api, api_server = items_api
    api.set({"id": 1})
    # the first four requests fail (three attempts, then the first probe), the fifth succeeds
    receiver.handler = lambda _r: Reply(500, "down") if len(receiver.requests) <= 4 else Reply(204)
    config = _config(
        tmp_path,
        api_server.url("/orders"),
        listener(
            "flaky",
            receiver.url("/flaky"),
            retry=["100ms"] * 5,
            breaker_failures=3,
            breaker_cooldown="1s",
        ),
    )
    with DaemonProcess(config) as daemon:
        api_server.wait_count(1)
        api.set({"id": 1}, {"id": 2})
        receiver.wait_count(5, timeout_s=15)
        time.sleep(0.3)
        assert daemon.terminate() == 0, daemon.output()
    out = daemon.output()
    at = [r.at for r in receiver.requests]
    assert len(at) == 5, out
    assert at[3] - at[2] > 0.8, at  # open for 1s: nothing sent
    assert at[4] - at[3] > 1.6, at  # a failed probe doubles the cooldown to 2s
    # every request is one recorded attempt; 5 attempts fit a 6-attempt schedule: not dead
    rows = [(d.state, d.attempts) for d in _view(tmp_path).deliveries(listener="flaky")]
    assert rows == [("delivered", 5)]
    assert "circuit breaker OPEN after 3 consecutive failed attempts" in out
    assert "HALF-OPEN" in out
    assert "probe failed; circuit breaker OPEN again for 2s" in out
    assert "circuit breaker CLOSED" in out


def test_coalescing_collapses_updates_while_the_receiver_is_stuck(tmp_path, items_api, receiver):
    """With coalesce = true, updates queued behind a stuck request arrive as one net update."""
    api, api_server = items_api
    api.set({"id": 1, "status": "s0", "seen": 0})
    release = threading.Event()

    def handler(req: Request) -> Reply:
        release.wait(20)
        return Reply(204)

    receiver.handler = handler
    config = _config(
        tmp_path,
        api_server.url("/orders"),
        listener("chat", receiver.url("/chat"), coalesce=True, max_in_flight=1, timeout="30s"),
        ignore=["$.seen"],
    )
    with DaemonProcess(config) as daemon:
        api_server.wait_count(1)
        api.set({"id": 1, "status": "s1", "seen": 1})
        receiver.wait_count(1)  # s0 -> s1 is out, and the receiver holds it
        for i in range(2, 5):
            api.set({"id": 1, "status": f"s{i}", "seen": i})
            polled = len(api_server.requests)
            api_server.wait_count(polled + 2)  # the change was polled and committed
        release.set()
        reqs = receiver.wait_count(2)
        time.sleep(0.5)
        assert daemon.terminate() == 0, daemon.output()
    assert len(receiver.requests) == 2, [r.json() for r in receiver.requests]
    first, merged = (r.json() for r in reqs)
    assert first["data"]["after"]["status"] == "s1"
    assert merged["type"] == "item.updated"
    assert merged["data"]["before"] == {"id": 1, "status": "s1", "seen": 1}
    assert merged["data"]["after"] == {"id": 1, "status": "s4", "seen": 4}
    assert merged["data"]["changes"] == [{"op": "replace", "path": "/status", "value": "s4"}]
    assert merged["id"] not in {first["id"]}
    states = _view(tmp_path).states()
    assert states["delivered"] == 2
    assert states["coalesced"] >= 3


def test_disable_after_pauses_loudly_and_resume_delivers(tmp_path, items_api, receiver):
    """After disable_after of only failures the listener pauses; `pollbridge resume` sends the rest."""
    api, api_server = items_api
    api.set({"id": 1})
    healthy = threading.Event()
    receiver.handler = lambda _r: Reply(204) if healthy.is_set() else Reply(503, "maintenance")
    config = _config(
        tmp_path,
        api_server.url("/orders"),
        listener(
            "partner",
            receiver.url("/partner"),
            retry=["150ms"] * 12,
            breaker_failures=0,
            disable_after="1s",
        ),
    )
    with DaemonProcess(config) as daemon:
        api_server.wait_count(1)
        api.set({"id": 1}, {"id": 2})
        deadline = time.monotonic() + 15
        while "DISABLED" not in daemon.output():
            assert time.monotonic() < deadline, daemon.output()
            time.sleep(0.1)
        failed = len(receiver.requests)
        api.set({"id": 1}, {"id": 2}, {"id": 3})  # queued while disabled
        api_server.wait_count(len(api_server.requests) + 2)
        time.sleep(0.5)
        assert len(receiver.requests) == failed  # paused: nothing is sent
        healthy.set()
        resumed = run_cli("resume", "partner", "--config", str(config))
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed (was paused: disabled: nothing but failed deliveries" in resumed.stdout
        reqs = receiver.wait_count(failed + 2)
        time.sleep(0.3)
        assert daemon.terminate() == 0, daemon.output()
    assert "LISTENER partner DISABLED" in daemon.output()
    assert "pollbridge resume partner" in daemon.output()
    keys = [r.json()["key"] for r in reqs[failed:]]
    assert sorted(set(keys)) == ["2", "3"]
    assert _view(tmp_path).states() == {"delivered": 2}
