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


def _names(body: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(body) for s in family.samples}


def _observed() -> Metrics:
    m = Metrics()
    m.observe_poll(
        "orders",
        ok=True,
        result="ok",
        duration_s=0.2,
        item_count=1,
        change_types=["created"],
        at=T0,
    )
    event = Event("evt_1", 1, "orders", "1", "created", T0, None, {}, [])
    delivery = Delivery(1, "hooks", event, 0, T0.timestamp())
    m.observe_delivery("hooks", delivery, AttemptResult(True, 204, 0.1), "delivered", T0)
    return m


def test_no_created_series_in_either_format():
    """Counters and histograms export no ``_created`` samples, in the text format and in
    OpenMetrics."""
    m = _observed()
    text, _ = m.render()
    openmetrics, content_type = m.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert "pollbridge_polls_total" in _names(text.decode())
    assert "_created" not in text.decode()
    assert "_created" not in openmetrics.decode()


def test_process_and_platform_collectors_are_on_the_daemon_registry():
    """The standard process_* and python_info series are served, on this registry only."""
    names = _names(Metrics().render()[0].decode())
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "python_info",
    ):
        assert name in names, name


def test_reloaded_sets_the_reload_gauges():
    """Before any reload the running configuration counts as loaded; a rejected reload sets 0
    and its time, a good one 1 again."""
    m = Metrics()
    assert _samples(m)[("pollbridge_last_reload_success", ())] == 1
    m.reloaded(False, T0)
    s = _samples(m)
    assert s[("pollbridge_last_reload_success", ())] == 0
    assert s[("pollbridge_last_reload_timestamp_seconds", ())] == T0.timestamp()
    m.reloaded(True, T0 + timedelta(seconds=5))
    s = _samples(m)
    assert s[("pollbridge_last_reload_success", ())] == 1
    assert s[("pollbridge_last_reload_timestamp_seconds", ())] == T0.timestamp() + 5


def test_internal_errors_are_counted_by_component():
    """Known components start at 0 (so the first error is an increase); any name counts."""
    m = Metrics()
    key = ("pollbridge_internal_errors_total", (("component", "dispatcher"),))
    assert _samples(m)[key] == 0
    m.internal_error("dispatcher")
    m.internal_error("dispatcher")
    m.internal_error("something-new")
    s = _samples(m)
    assert s[key] == 2
    assert s[("pollbridge_internal_errors_total", (("component", "something-new"),))] == 1


def test_source_interval_is_exported_and_forgotten():
    """The polling interval the staleness alert needs; removed with the source."""
    m = Metrics()
    m.set_source_interval("orders", 30.0)
    key = ("pollbridge_source_interval_seconds", (("source", "orders"),))
    assert _samples(m)[key] == 30
    m.forget_source("orders")
    assert key not in _samples(m)
