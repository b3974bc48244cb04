"""bridge/metrics.py: what a poll and a delivery add, and what a reload removes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics import Metrics
from bridge.models import AttemptResult, Delivery, Event

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _samples(metrics: Metrics) -> dict:
    body, _ = metrics.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_poll_and_delivery_observations_and_forgetting():
    """Counters and gauges move as documented; forget_* drops every series of a removed name."""
    m = Metrics()
    m.observe_poll(
        "orders",
        ok=True,
        result="ok",
        duration_s=0.2,
        item_count=5,
        change_types=["created", "created", "deleted"],
        at=T0,
    )
    m.observe_poll(
        "orders", ok=False, result="error", duration_s=1.0, item_count=0, change_types=[], at=T0
    )
    m.observe_poll(
        "orders", ok=True, result="held", duration_s=0.1, item_count=1, change_types=[], at=T0
    )
    event = Event("evt_1", 1, "orders", "1", "created", T0, None, {}, [])
    delivery = Delivery(1, "hooks", event, 0, T0.timestamp())
    m.observe_delivery("hooks", delivery, AttemptResult(False, 500, 0.1), "pending", T0)
    m.observe_delivery(
        "hooks", delivery, AttemptResult(True, 204, 0.1), "delivered", T0 + timedelta(seconds=42)
    )
    m.set_listener_gauges(
        ["hooks"], {"hooks": {"pending": 3, "dead": 1}}, paused=["hooks"], in_flight={"hooks": 2}
    )
    s = _samples(m)
    assert s[("pollbridge_polls_total", (("result", "ok"), ("source", "orders")))] == 1
    assert s[("pollbridge_polls_total", (("result", "error"), ("source", "orders")))] == 1
    assert s[("pollbridge_changes_total", (("source", "orders"), ("type", "created")))] == 2
    assert s[("pollbridge_source_items", (("source", "orders"),))] == 5  # not the held 1
    assert s[("pollbridge_source_held", (("source", "orders"),))] == 1
    assert s[("pollbridge_source_consecutive_failures", (("source", "orders"),))] == 0
    assert s[("pollbridge_source_last_success_timestamp_seconds", (("source", "orders"),))] == (
        T0.timestamp()
    )
    assert s[("pollbridge_deliveries_total", (("listener", "hooks"), ("result", "failed")))] == 1
    assert s[("pollbridge_delivery_latency_seconds_sum", (("listener", "hooks"),))] == 42
    assert s[("pollbridge_deliveries_pending", (("listener", "hooks"),))] == 3
    assert s[("pollbridge_deliveries_in_flight", (("listener", "hooks"),))] == 2
    assert s[("pollbridge_listener_paused", (("listener", "hooks"),))] == 1

    m.forget_source("orders")
    m.forget_listener("hooks")
    left = [
        key
        for key in _samples(m)
        if ("source", "orders") in key[1] or ("listener", "hooks") in key[1]
    ]
    assert left == []


def test_each_daemon_has_its_own_registry():
    """Two Metrics never share series (no global registry)."""
    a, b = Metrics(), Metrics()
    a.observe_poll("x", ok=True, result="ok", duration_s=0.1, item_count=1, change_types=[], at=T0)
    assert ("pollbridge_source_items", (("source", "x"),)) not in _samples(b)
