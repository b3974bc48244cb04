"""What the daemon keeps and says of each finished poll: run statistics, metrics, a log line."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from bridge.metrics import Metrics
from bridge.outcome import PollOutcome, describe_outcome

log = logging.getLogger("pollbridge.daemon")


@dataclass
class RunStats:
    """Counts since start, and each source's last outcome and last success."""

    polls_failed: int = 0
    polls_ok: int = 0
    last_outcomes: dict[str, PollOutcome] = field(default_factory=dict)
    last_success: dict[str, datetime] = field(default_factory=dict)

    def forget(self, source: str) -> None:
        self.last_outcomes.pop(source, None)

    def failing(self, configured: set[str]) -> list[str]:
        """Configured sources whose last poll failed."""
        return sorted(
            name
            for name, outcome in self.last_outcomes.items()
            if not outcome.ok and name in configured
        )


def report_poll(
    source: str, outcome: PollOutcome, now: datetime, stats: RunStats, metrics: Metrics
) -> None:
    """Record one poll's outcome in the statistics and metrics, and log it."""
    stats.last_outcomes[source] = outcome
    metrics.observe_poll(
        source,
        ok=outcome.ok,
        result=outcome.result,
        duration_s=outcome.duration_s,
        item_count=outcome.item_count,
        change_types=[c.type for c in outcome.changes] if outcome.committed else [],
        at=now,
    )
    extra = {"source": source}
    if not outcome.ok:
        stats.polls_failed += 1
        later = ""
        if outcome.not_before is not None:
            later = f"; next poll not before {outcome.not_before.isoformat(timespec='seconds')}"
        log.warning("%s%s", outcome.error, later, extra=extra)
        return
    stats.last_success[source] = now
    stats.polls_ok += 1
    fields = describe_outcome(outcome)
    changed = fields["created"] + fields["updated"] + fields["deleted"]
    level = logging.INFO if changed or outcome.result != "unchanged" else logging.DEBUG
    details = f", {outcome.detail_fetches} detail request(s)" if outcome.detail_fetches else ""
    asked = f"; asked for the {outcome.asked}, cursor {outcome.cursor}" if outcome.asked else ""
    log.log(
        level,
        "poll %s: %s, %d items, %d created, %d updated, %d deleted%s (%.0f ms)%s",
        source,
        outcome.result,
        outcome.item_count,
        fields["created"],
        fields["updated"],
        fields["deleted"],
        details,
        outcome.duration_s * 1000,
        asked,
        extra=extra,
    )
