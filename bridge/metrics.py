"""Prometheus metrics of one daemon, on a registry of its own (never the global one)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from bridge import __version__
from bridge.models import AttemptResult, Delivery

_POLL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600)
# the metric types prometheus_client gives a ``<name>_created`` sample
_WITH_CREATED = frozenset({"counter", "histogram", "summary", "gaugehistogram"})

INTERNAL_COMPONENTS = ("dispatcher", "sender", "poll", "heartbeat", "leases", "http")
"""The components ``pollbridge_internal_errors_total`` has a series for from the start, so that
the first error shows as an increase (any other name gets its series when it first counts)."""


class _Registry(CollectorRegistry):
    """A registry without the ``_created`` series: one more series per counter and histogram
    child that dashboards and alerts never use (and that Prometheus stores for each). Done here
    rather than by ``disable_created_metrics()``, which would change every registry of the
    process."""

    def collect(self) -> Iterator[Metric]:
        for family in super().collect():
            if family.type in _WITH_CREATED:
                created = f"{family.name}_created"
                kept = Metric(family.name, family.documentation, family.type, family.unit)
                kept.samples = [s for s in family.samples if s.name != created]
                yield kept
            else:
                yield family


class Metrics:
    """Every metric pollbridge exports; the daemon feeds it, ``/metrics`` renders it."""

    def __init__(self) -> None:
        r = self.registry = _Registry(auto_describe=True)
        self._series: dict[str, set[tuple[str, ...]]] = {}
        # process_* (CPU, memory, open files, start time) and python_info, as on the default
        # registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Gauge("pollbridge_build_info", "pollbridge's version.", ["version"], registry=r).labels(
            __version__
        ).set(1)
        self.polls = Counter(
            "pollbridge_polls", "Polls by source and result.", ["source", "result"], registry=r
        )
        self.poll_duration = Histogram(
            "pollbridge_poll_duration_seconds",
            "Time a poll took: fetch, extract, diff and commit.",
            ["source"],
            buckets=_POLL_BUCKETS_S,
            registry=r,
        )
        self.items = Gauge(
            "pollbridge_source_items",
            "Items in the source's last good snapshot.",
            ["source"],
            registry=r,
        )
        self.changes = Counter(
            "pollbridge_changes",
            "Changes recorded, by source and type.",
            ["source", "type"],
            registry=r,
        )
        self.last_success = Gauge(
            "pollbridge_source_last_success_timestamp_seconds",
            "Unix time of the source's last successful poll.",
            ["source"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "pollbridge_source_consecutive_failures",
            "Polls failed in a row (0 after a success).",
            ["source"],
            registry=r,
        )
        self.held = Gauge(
            "pollbridge_source_held",
            "1 while the source's last poll was held by the mass-delete guard (pollbridge accept).",
            ["source"],
            registry=r,
        )
        self.deliveries = Counter(
            "pollbridge_deliveries",
            "Delivery attempts by listener and result (delivered, failed, dead).",
            ["listener", "result"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "pollbridge_delivery_latency_seconds",
            "From detecting a change to its successful delivery, retries included.",
            ["listener"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.pending = Gauge(
            "pollbridge_deliveries_pending",
            "Deliveries waiting to be sent.",
            ["listener"],
            registry=r,
        )
        self.dead = Gauge(
            "pollbridge_deliveries_dead",
            "Deliveries that exhausted their retries (replay them with pollbridge replay --dead).",
            ["listener"],
            registry=r,
        )
        self.in_flight = Gauge(
            "pollbridge_deliveries_in_flight",
            "Deliveries being sent now.",
            ["listener"],
            registry=r,
        )
        self.listener_paused = Gauge(
            "pollbridge_listener_paused",
            "1 while the listener is paused or disabled (pollbridge resume brings it back).",
            ["listener"],
            registry=r,
        )
        self.listener_breaker_open = Gauge(
            "pollbridge_listener_breaker_open",
            "1 while the listener's circuit breaker is open.",
            ["listener"],
            registry=r,
        )
        self.source_interval = Gauge(
            "pollbridge_source_interval_seconds",
            "Seconds between two scheduled polls of the source (for cron, between its next two).",
            ["source"],
            registry=r,
        )
        self.last_reload_success = Gauge(
            "pollbridge_last_reload_success",
            "1 if the running configuration loaded (at start or by the last reload), 0 while the "
            "last reload was rejected and the previous configuration is kept.",
            registry=r,
        )
        self.last_reload_success.set(1)  # a daemon runs only with a configuration that loaded
        self.last_reload_timestamp = Gauge(
            "pollbridge_last_reload_timestamp_seconds",
            "Unix time of the last configuration load (start or reload), successful or not.",
            registry=r,
        )
        self.internal_errors = Counter(
            "pollbridge_internal_errors",
            "Unexpected exceptions caught (and logged with their traceback), by component.",
            ["component"],
            registry=r,
        )
        for component in INTERNAL_COMPONENTS:
            self.internal_errors.labels(component)

    # -- feeding ----------------------------------------------------------------------------

    def _note(self, kind: str, *labels: str) -> None:
        self._series.setdefault(kind, set()).add(labels)

    def observe_poll(
        self,
        source: str,
        *,
        ok: bool,
        result: str,
        duration_s: float,
        item_count: int,
        change_types: Iterable[str],
        at: datetime,
    ) -> None:
        """One finished poll."""
        self.polls.labels(source, result).inc()
        self._note("polls", source, result)
        self.poll_duration.labels(source).observe(duration_s)
        if ok:
            held = result == "held"
            self.held.labels(source).set(1 if held else 0)
            if not held:  # a held poll leaves the snapshot as it was
                self.items.labels(source).set(item_count)
            self.last_success.labels(source).set(at.timestamp())
            self.consecutive_failures.labels(source).set(0)
            for change_type in change_types:
                self.changes.labels(source, change_type).inc()
                self._note("changes", source, change_type)
        else:
            self.consecutive_failures.labels(source).inc()

    def seed_source(self, source: str, *, item_count: int, last_success: datetime | None) -> None:
        """What the store remembers from before this run, so gauges start meaningful."""
        self.items.labels(source).set(item_count)
        self.consecutive_failures.labels(source)
        if last_success is not None:
            self.last_success.labels(source).set(last_success.timestamp())

    def observe_delivery(
        self, listener: str, delivery: Delivery, result: AttemptResult, state: str, now: datetime
    ) -> None:
        """One finished delivery attempt."""
        outcome = "delivered" if result.ok else ("dead" if state == "dead" else "failed")
        self.deliveries.labels(listener, outcome).inc()
        self._note("deliveries", listener, outcome)
        if result.ok:
            latency_s = max(0.0, (now - delivery.event.timestamp).total_seconds())
            self.delivery_latency.labels(listener).observe(latency_s)

    def set_listener_gauges(
        self,
        listeners: Iterable[str],
        counts: Mapping[str, Mapping[str, int]],
        *,
        paused: Iterable[str],
        in_flight: Mapping[str, int],
        breaker_open: Iterable[str] = (),
    ) -> None:
        """Refresh the per-listener gauges (called before each scrape)."""
        paused_set, open_set = set(paused), set(breaker_open)
        for name in listeners:
            c = counts.get(name, {})
            self.pending.labels(name).set(c.get("pending", 0))
            self.dead.labels(name).set(c.get("dead", 0))
            self.in_flight.labels(name).set(in_flight.get(name, 0))
            self.listener_paused.labels(name).set(1 if name in paused_set else 0)
            self.listener_breaker_open.labels(name).set(1 if name in open_set else 0)

    def set_source_interval(self, source: str, interval_s: float) -> None:
        """The source's polling interval (at start, and when a reload adds or changes it): the
        staleness alert compares the age of the last success with it."""
        self.source_interval.labels(source).set(interval_s)

    def internal_error(self, component: str) -> None:
        """An unexpected exception in ``component`` was caught and logged."""
        self.internal_errors.labels(component).inc()

    # -- reload -----------------------------------------------------------------------------

    def reloaded(self, ok: bool, at: datetime) -> None:
        """A configuration load finished: at start (``ok=True``) and after each reload."""
        self.last_reload_success.set(1 if ok else 0)
        self.last_reload_timestamp.set(at.timestamp())

    def forget_source(self, source: str) -> None:
        """Drop a removed source's series so dashboards stop showing it."""
        for metric in (
            self.poll_duration,
            self.items,
            self.last_success,
            self.consecutive_failures,
            self.held,
            self.source_interval,
        ):
            _remove(metric, source)
        for kind, counter in (("polls", self.polls), ("changes", self.changes)):
            for labels in [s for s in self._series.get(kind, set()) if s[0] == source]:
                _remove(counter, *labels)
                self._series[kind].discard(labels)

    def forget_listener(self, listener: str) -> None:
        """Drop a removed listener's series."""
        for metric in (
            self.delivery_latency,
            self.pending,
            self.dead,
            self.in_flight,
            self.listener_paused,
            self.listener_breaker_open,
        ):
            _remove(metric, listener)
        for labels in [s for s in self._series.get("deliveries", set()) if s[0] == listener]:
            _remove(self.deliveries, *labels)
            self._series["deliveries"].discard(labels)

    # -- rendering --------------------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (text, or OpenMetrics when asked for) and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    # a series never observed has nothing to remove
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
