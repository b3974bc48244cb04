"""What the dispatcher keeps in memory per listener: its pace (token bucket, circuit breaker,
failure streak, coalescing) and the deliveries it claimed ahead of its free slots; and the
store calls around them that must not stop the loop (coalescing, giving claims back).

Nothing here is durable: a restart starts every bucket and breaker afresh, and what was claimed
ahead is due again (SQLite) or after its claim expires (PostgreSQL).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from bridge.config import MAX_BREAKER_COOLDOWN, ListenerConfig
from bridge.core.breaker import CircuitBreaker, Transition
from bridge.core.durations import format_duration
from bridge.core.ratelimit import TokenBucket
from bridge.errors import StoreError
from bridge.models import AttemptResult, Delivery
from bridge.store.base import DeliveryQueue, MergeUpdates

log = logging.getLogger("pollbridge.deliver")

AHEAD_ROUNDS = 4
"""A listener that claims ahead holds up to this many rounds of its slots beyond them."""
INTERNAL_BACKOFF_S = (1.0, 5.0, 30.0, 60.0)
"""How long a listener waits after an unexpected error in its own dispatch path, by streak."""
TOP_UP_ROUNDS = 2
"""It claims again once fewer than this many rounds are left: a claim waits for the store's
thread (behind the attempts being recorded) for 2-5 ms at a few thousand webhooks a second,
longer than one round of 16 lasts."""


def pace_settings(listener: ListenerConfig) -> tuple[Any, ...]:
    """What a pace is built from: a reload that leaves these alone keeps bucket and breaker."""
    return (listener.rate, listener.burst, listener.breaker_failures, listener.breaker_cooldown)


@dataclass
class Pace:
    """A listener's in-memory protection: token bucket, breaker, failure streak, coalescing."""

    bucket: TokenBucket | None
    breaker: CircuitBreaker | None
    settings: tuple[Any, ...]
    failing_since: datetime | None = None
    coalesce_due: bool = True
    held_until: float = 0.0
    """Monotonic time before which nothing is claimed: set after an internal error."""
    internal_errors: int = 0
    """Unexpected errors in a row in this listener's path (reset by a clean pass)."""
    ahead: deque[tuple[Delivery, float]] = field(default_factory=deque)
    """Deliveries claimed beyond the free slots, in claim order, each with the monotonic time
    of its claim; started as slots free up without waiting for the store, given back
    (unattempted) when the listener may not send or the claim is half its lease old."""

    def ahead_ids(self) -> list[int]:
        return [d.id for d, _ in self.ahead]

    def take_ahead(self) -> list[int]:
        """Empty :attr:`ahead`; the ids it held."""
        ids = self.ahead_ids()
        self.ahead.clear()
        return ids

    def next_ahead(self, mono: float, max_age_s: float) -> Delivery | None:
        """The next delivery claimed ahead, unless its claim is older than ``max_age_s`` (a
        slow listener: its claim could expire before it starts, and another instance send
        it too); None then, or when nothing is ahead."""
        if not self.ahead:
            return None
        delivery, claimed = self.ahead[0]
        return delivery if mono - claimed <= max_age_s else None

    def hold(self, mono: float) -> float:
        """After an unexpected error: claim nothing for a while, longer each time in a row;
        return how long (what was claimed ahead is the caller's to hand back)."""
        self.internal_errors += 1
        backoff = INTERNAL_BACKOFF_S[min(self.internal_errors, len(INTERNAL_BACKOFF_S)) - 1]
        self.held_until = mono + backoff
        return backoff

    def ahead_short(self, max_in_flight: int) -> int:
        """How many more deliveries may be claimed ahead of the free slots: up to
        :data:`AHEAD_ROUNDS` rounds of them, enough to cover a claim that waits a few
        milliseconds (none when this pace does not claim ahead)."""
        if not self.claims_ahead:
            return 0
        return AHEAD_ROUNDS * max_in_flight - len(self.ahead)

    def wants_top_up(self, max_in_flight: int) -> bool:
        """Whether, with every slot busy, it is time to claim ahead again: fewer than
        :data:`TOP_UP_ROUNDS` rounds left, so that a claim brings several."""
        return self.ahead_short(max_in_flight) > (AHEAD_ROUNDS - TOP_UP_ROUNDS) * max_in_flight

    @classmethod
    def for_listener(cls, listener: ListenerConfig, now: float) -> Pace:
        rate = listener.rate_limit
        bucket = None if rate is None else TokenBucket(rate.per_second, listener.burst, now=now)
        breaker = None
        if listener.breaker_failures:
            cooldown_s = listener.breaker_cooldown.total_seconds()
            breaker = CircuitBreaker(
                listener.breaker_failures, cooldown_s, MAX_BREAKER_COOLDOWN.total_seconds()
            )
        return cls(bucket, breaker, pace_settings(listener))

    @property
    def claims_ahead(self) -> bool:
        """Whether claiming beyond the free slots is safe: no rate to keep (a claim could
        outlive its lease waiting for tokens) and a closed breaker (nothing to hold back)."""
        return self.bucket is None and (self.breaker is None or self.breaker.state == "closed")

    def account(
        self, result: AttemptResult, probe: bool, mono: float, clock: Callable[[], datetime]
    ) -> Transition | None:
        """Feed a sent attempt's result to the breaker and the failure streak."""
        if result.ok:
            self.failing_since = None
            if self.breaker is not None:
                return self.breaker.record_success(mono, probe=probe)
            return None
        if self.failing_since is None:
            self.failing_since = clock()
        if self.breaker is not None:
            return self.breaker.record_failure(mono, probe=probe)
        return None


def listener_state(paused: bool, breaker: str | None) -> str:
    """``paused``, ``breaker_open``, ``breaker_half_open`` or ``active``."""
    if paused:
        return "paused"
    if breaker in ("open", "half-open"):
        return "breaker_" + breaker.replace("-", "_")
    return "active"


def claim_seconds(listener: ListenerConfig, lease_s: float) -> float:
    """How long a claim holds: the lease, and at least twice the listener's timeout."""
    return max(lease_s, 2 * listener.timeout.total_seconds())


def carry_paces(
    paces: Mapping[str, Pace],
    listeners: Mapping[str, ListenerConfig],
    now: float,
    returns: ClaimReturns,
) -> dict[str, Pace]:
    """The paces of ``listeners`` after a reload: one whose rate and breaker settings did not
    change is kept (bucket, breaker, what it claimed ahead); a new one keeps the failure
    streak and, if it may claim ahead, what was claimed; the rest is handed back."""
    carried = {}
    for name, listener in listeners.items():
        old = paces.get(name)
        if old is not None and old.settings == pace_settings(listener):
            carried[name] = old
            continue
        carried[name] = Pace.for_listener(listener, now)
        if old is not None:
            carried[name].failing_since = old.failing_since
            if carried[name].claims_ahead:
                carried[name].ahead = old.ahead
            else:
                returns.hand_back(old)
    for name, old in paces.items():
        if name not in carried:
            returns.hand_back(old)  # a listener reloaded away
    return carried


class ClaimReturns:
    """Deliveries claimed ahead that their listener may not send after all, given back to the
    store unattempted (no retry used up): at once, or at the next pass from code that cannot
    await the store."""

    def __init__(self, store: DeliveryQueue, owner: str):
        self.store = store
        self.owner = owner
        self.waiting: list[int] = []

    def hand_back(self, pace: Pace) -> None:
        """Take what ``pace`` claimed ahead, to release at the next :meth:`release`."""
        self.waiting.extend(pace.take_ahead())

    async def release(self) -> None:
        """Release what was handed back; on a store error it waits for the next call."""
        ids, self.waiting = self.waiting, []
        if not ids:
            return
        try:
            await self.store.release_claims(ids, owner=self.owner)
        except StoreError:
            self.waiting.extend(ids)
            raise

    async def release_now(self, pace: Pace, exclude: list[int]) -> None:
        """Release what ``pace`` claimed ahead, and take it out of this pass's ``exclude``."""
        if pace.ahead:
            ids = set(pace.take_ahead())
            await self.store.release_claims(sorted(ids), owner=self.owner)
            exclude[:] = [i for i in exclude if i not in ids]

    async def release_all(self, paces: Iterable[Pace]) -> None:
        """Release everything claimed ahead (stopping); a store error is logged, not raised:
        those deliveries stay pending, a claim only keeps them from being coalesced (and, on
        PostgreSQL, from other instances until it expires)."""
        for pace in paces:
            self.hand_back(pace)
        try:
            await self.release()
        except StoreError as exc:
            log.warning("giving back deliveries claimed ahead: %s", exc)


async def coalesce(
    store: DeliveryQueue,
    listener: str,
    pace: Pace,
    now: datetime,
    exclude: list[int],
    merge: MergeUpdates,
) -> None:
    """Merge ``listener``'s waiting updates of a key (it is behind); a store error is logged
    and the deliveries are sent as they are, coalescing is tried again at the next pass."""
    pace.coalesce_due = False
    try:
        fewer = await store.coalesce_pending(listener, now, exclude, merge)
    except StoreError as exc:
        pace.coalesce_due = True
        log.warning("coalescing for %s: %s; sending without it", listener, exc)
        return
    if fewer:
        log.info(
            "listener %s is behind: coalesced waiting updates, %d fewer deliveries",
            listener,
            fewer,
            extra={"listener": listener},
        )


def pause_reason(
    listener: ListenerConfig, result: AttemptResult, failing_since: datetime | None, now: datetime
) -> str | None:
    """Why this failed result pauses the listener: 410 Gone, or ``disable_after`` reached."""
    if result.gone:
        return "the listener answered 410 Gone"
    limit = listener.disable_after
    since = failing_since
    if limit is None or since is None or now - since < limit or not result.sent:
        return None
    return (
        f"disabled: nothing but failed deliveries for {failing_for(now, since)} since "
        f"{since.isoformat(timespec='seconds')} (disable_after = "
        f"{format_duration(limit)})"
    )


def failing_for(now: datetime, since: datetime) -> str:
    """How long a listener has been failing, in whole seconds, for the log."""
    return format_duration(timedelta(seconds=int((now - since).total_seconds())))


def redacted(result: AttemptResult, redact: Callable[[str], str]) -> AttemptResult:
    """``result`` with secrets out of its error and excerpt: a listener may echo the headers
    it was sent (tokens) in its error response."""
    if result.error is None and result.response_excerpt is None:
        return result  # the usual 2xx with an empty body: nothing to look at
    return replace(
        result,
        error=None if result.error is None else redact(result.error),
        response_excerpt=(
            None if result.response_excerpt is None else redact(result.response_excerpt)
        ),
    )
