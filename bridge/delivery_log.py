"""What the dispatcher says in the log about attempts and circuit breakers."""

from __future__ import annotations

import logging
from datetime import timedelta

from bridge.config import ListenerConfig
from bridge.core.breaker import Transition
from bridge.core.durations import format_duration
from bridge.models import AttemptResult, Delivery

log = logging.getLogger("pollbridge.deliver")


def log_transition(listener: ListenerConfig, t: Transition) -> None:
    """Say that a listener's circuit breaker changed state."""
    extra = {"listener": listener.name, "breaker": t.new}
    if t.new == "open" and t.old == "closed":
        log.warning(
            "listener %s: circuit breaker OPEN after %d consecutive failed attempts; "
            "its deliveries wait %s (no retries used up), then one probe request",
            listener.name,
            t.failures,
            format_duration(timedelta(seconds=t.cooldown_s)),
            extra=extra,
        )
    elif t.new == "open":
        log.warning(
            "listener %s: probe failed; circuit breaker OPEN again for %s",
            listener.name,
            format_duration(timedelta(seconds=t.cooldown_s)),
            extra=extra,
        )
    elif t.new == "half-open":
        log.warning(
            "listener %s: circuit breaker HALF-OPEN: sending one probe request",
            listener.name,
            extra=extra,
        )
    else:
        log.warning(
            "listener %s: probe succeeded; circuit breaker CLOSED, deliveries resume",
            listener.name,
            extra=extra,
        )


def log_attempt(
    listener: ListenerConfig,
    delivery: Delivery,
    result: AttemptResult,
    state: str,
    next_at: float | None,
    now_s: float,
) -> None:
    """Log one finished attempt: debug when delivered, a warning with the next try when it
    failed, an error when it is dead."""
    if result.ok and not log.isEnabledFor(logging.DEBUG):
        return  # the usual case, once per webhook: not even the record's fields
    extra = {
        "listener": listener.name,
        "event": delivery.event.id,
        "source": delivery.event.source,
    }
    if result.ok:
        log.debug(
            "delivered %s to %s (HTTP %s, %.0f ms)",
            delivery.event.id,
            listener.name,
            result.status,
            result.duration_s * 1000,
            extra=extra,
        )
    elif state == "dead":
        log.error(
            "delivery of %s to %s is dead after %d attempts: %s",
            delivery.event.id,
            listener.name,
            delivery.attempts + 1,
            result.error,
            extra=extra,
        )
    elif result.gone:
        # the 410 pauses the listener, which is logged once, as such
        log.debug(
            "delivery of %s to %s: 410 Gone, it waits for the listener to be resumed",
            delivery.event.id,
            listener.name,
            extra=extra,
        )
    else:
        wait = (next_at or 0) - now_s
        log.warning(
            "delivery of %s to %s failed (attempt %d): %s; next attempt in %.1fs",
            delivery.event.id,
            listener.name,
            delivery.attempts + 1,
            result.error,
            max(0.0, wait),
            extra=extra,
        )


def log_pause(listener: ListenerConfig, gone: bool, failing_for: str | None, waiting: int) -> None:
    """Say that an attempt's result paused the listener: 410 Gone, or ``disable_after``."""
    name = listener.name
    if gone:
        log.warning(
            "listener %s answered 410 Gone: paused; its deliveries wait "
            "(resume with: pollbridge resume %s)",
            name,
            name,
            extra={"listener": name},
        )
        return
    limit = listener.disable_after
    log.error(
        "LISTENER %s DISABLED: every delivery has failed for %s (disable_after = %s). "
        "Its %d pending delivery(ies) are kept and wait. Fix the receiver, then run: "
        "pollbridge resume %s",
        name,
        failing_for or "?",
        "?" if limit is None else format_duration(limit),
        waiting,
        name,
        extra={"listener": name},
    )
