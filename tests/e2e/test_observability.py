"""/metrics and /healthz scraped from a running daemon; JSON logs that never show a secret."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.core.signing import generate_secret
from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess, eventually
from tests.support.servers import Reply

pytestmark = pytest.mark.e2e


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _config(tmp_path: Path, api_url: str, hook_url: str, extra: str = "") -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("orders", api_url, headers={"Authorization": "Bearer tok-${API_TOKEN}"}),
        listener("hooks", hook_url, secret="${HOOK_SECRET}"),
        http="127.0.0.1:0",
        bridge=extra,
    )


def test_metrics_and_healthz_during_a_run(tmp_path, items_api, receiver):
    """/metrics counts polls, items, changes, deliveries and latency; /healthz says ok with
    per-source staleness; HEAD, unknown paths and other methods get the right status."""
    api, api_server = items_api
    api.set({"id": 1}, {"id": 2})
    env = {"API_TOKEN": "s3cr3t-token-value", "HOOK_SECRET": generate_secret()}
    config = _config(tmp_path, api_server.url("/orders"), receiver.url("/hooks"))
    with DaemonProcess(config, env=env) as daemon:
        base = daemon.wait_output(r"serving /metrics and /healthz on (http://\S+)").group(1)
        api_server.wait_count(1)
        api.set({"id": 1, "v": 2}, {"id": 3})
        receiver.wait_count(3)

        def scraped() -> dict | None:
            reply = httpx.get(base + "/metrics")
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/plain")
            samples = _samples(reply.text)
            done = _value(
                samples, "pollbridge_deliveries_total", listener="hooks", result="delivered"
            )
            return samples if done == 3 else None

        samples = eventually(scraped, what="3 deliveries in /metrics", context=daemon.output)
        polls = sum(
            v
            for (name, labels), v in samples.items()
            if name == "pollbridge_polls_total" and ("source", "orders") in labels
        )
        assert polls >= 2
        assert _value(samples, "pollbridge_polls_total", source="orders", result="baseline") == 1
        assert _value(samples, "pollbridge_source_items", source="orders") == 2
        for change in ("created", "updated", "deleted"):
            assert _value(samples, "pollbridge_changes_total", source="orders", type=change) == 1
        assert _value(samples, "pollbridge_poll_duration_seconds_count", source="orders") >= 2
        assert _value(samples, "pollbridge_delivery_latency_seconds_count", listener="hooks") == 3
        assert _value(samples, "pollbridge_deliveries_pending", listener="hooks") == 0
        assert _value(samples, "pollbridge_deliveries_dead", listener="hooks") == 0
        assert _value(samples, "pollbridge_listener_paused", listener="hooks") == 0
        assert (
            _value(samples, "pollbridge_source_last_success_timestamp_seconds", source="orders") > 0
        )

        health = httpx.get(base + "/healthz")
        assert health.status_code == 200
        doc = health.json()
        assert doc["status"] == "ok" and doc["scheduler"] == "running"
        assert doc["store"]["writable"] is True
        assert doc["sources"]["orders"]["stale"] is False
        assert doc["sources"]["orders"]["last_success_at"] is not None
        assert doc["listeners"]["hooks"]["state"] == "active"

        openmetrics = httpx.get(
            base + "/metrics", headers={"accept": "application/openmetrics-text"}
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")
        assert httpx.head(base + "/healthz").content == b""
        assert httpx.get(base + "/nope").status_code == 404
        assert httpx.post(base + "/metrics").status_code == 405
        assert daemon.terminate() == 0, daemon.output()
    output = daemon.output()
    assert env["API_TOKEN"] not in output and env["HOOK_SECRET"] not in output


def test_json_logs_carry_fields_and_hide_secrets(tmp_path, items_api, receiver):
    """log_format = "json": every line is a JSON object with source/listener fields; a secret
    that appears in an error (the URL echoed back) is redacted."""
    api, api_server = items_api
    api.set({"id": 1})
    env = {"API_TOKEN": "s3cr3t-token-value", "HOOK_SECRET": generate_secret()}
    config = _config(
        tmp_path,
        api_server.url("/orders"),
        receiver.url("/hooks"),
        extra='log_format = "json"\nlog_level = "debug"',
    )
    with DaemonProcess(config, env=env) as daemon:
        api_server.wait_count(1)
        api_server.handler = lambda r: Reply(500, f"denied for {r.headers.get('authorization')}")
        daemon.wait_output(r"poll of source 'orders' .* failed")
        assert daemon.terminate() == 0, daemon.output()
    lines = [json.loads(line) for line in daemon.output().splitlines() if line.strip()]
    assert lines, "no log lines"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    failed = [line for line in lines if line["message"].startswith("poll of source 'orders'")]
    assert failed and failed[0]["source"] == "orders" and failed[0]["level"] == "warning"
    text = daemon.output()
    assert env["API_TOKEN"] not in text and env["HOOK_SECRET"] not in text
