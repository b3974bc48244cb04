"""Sends pending deliveries as soon as they are due, in order per (listener, key).

Woken in-process when a poll commits; otherwise it sleeps until the next retry is due.
Delivery state lives in the store, so a crash or restart resumes where it stopped.

Per listener it also applies ``rate`` (a token bucket), the circuit breaker (while open, nothing
is claimed, so no retry is used up), ``disable_after`` (pause after days of nothing but failures)
and ``coalesce`` (merge a key's waiting updates before claiming). Bucket and breaker live in
memory: a restart starts them afresh.

A listener with no ``rate`` and a closed breaker claims up to four times ``max_in_flight``
deliveries beyond its free slots (topping up when fewer than two rounds are left), so that a
slot that frees up starts the next one at once instead of a store round trip later. What was
claimed ahead and may not be sent after all (the breaker opened, the listener was paused or
reloaded away, the claim is half its lease old, or the daemon stops) is given back unattempted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge.config import ListenerConfig
from bridge.core.coalesce import merged_changes
from bridge.core.paths import JsonPath
from bridge.core.retry import retry_at
from bridge.delivery_log import log_attempt, log_pause, log_transition
from bridge.delivery_pace import (
    ClaimReturns,
    Pace,
    coalesce,
    failing_for,
    pace_settings,
    pause_reason,
    record_attempt,
    redacted,
)
from bridge.errors import StoreError
from bridge.http.sender import Sender
from bridge.models import AttemptResult, Delivery, Event
from bridge.store import Store

log = logging.getLogger("pollbridge.deliver")

MAX_IDLE_S = 60.0
INTERNAL_BACKOFF_S = (1.0, 5.0, 30.0, 60.0)
"""How long a listener waits after an unexpected error in its own dispatch path, by streak."""
AHEAD_ROUNDS = 4
"""A listener that claims ahead holds up to this many rounds of its slots beyond them."""
TOP_UP_ROUNDS = 2
"""It claims again once fewer than this many rounds are left: a claim waits for the store's
thread (behind the attempts being recorded) for 2-5 ms at a few thousand webhooks a second,
longer than one round of 16 lasts."""
PAUSED_REFRESH_S = 2.0
"""While a listener is paused, how often the store is asked whether it was resumed."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    """Runs the delivery loop for every configured listener.

    One class on purpose: claiming, pacing (bucket, breaker, pause, coalescing), starting
    and accounting for attempts share the in-flight set and each listener's pace, and the
    per-key order and no-retry-burned rules are readable only where all of them are in view.
    What it logs lives in :mod:`bridge.delivery_log`.
    """

    def __init__(
        self,
        store: Store,
        sender: Sender,
        listeners: list[ListenerConfig],
        *,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_result: Callable[[ListenerConfig, Delivery, AttemptResult, str], None] | None = None,
        on_internal_error: Callable[[str], None] | None = None,
        ignore_paths: Mapping[str, Sequence[JsonPath]] | None = None,
        redact: Callable[[str], str] = str,
        owner: str = "local",
        lease_s: float = 30.0,
    ):
        self.store = store
        self.redact = redact
        self.sender = sender
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.on_result = on_result
        self.on_internal_error = on_internal_error
        self.internal_errors = 0
        """Unexpected errors caught in the delivery path since start (each is logged)."""
        self._ignore: Mapping[str, Sequence[JsonPath]] = dict(ignore_paths or {})
        # Deliveries are claimed in the store by ``owner`` (this instance) for at least the
        # lease and twice the listener's timeout, so no other instance attempts them meanwhile.
        self.owner = owner
        self.lease_s = lease_s
        self._listeners = {lst.name: lst for lst in listeners}
        self._pace: dict[str, Pace] = {}
        self._paused: set[str] = set()
        self._paused_checked = -math.inf
        self._rate_blocked: set[str] = set()
        self._inflight: dict[str, dict[int, asyncio.Task[None]]] = {n: {} for n in self._listeners}
        """Attempts whose request is being sent, by listener (each holds one of its slots)."""
        self._recording: dict[int, asyncio.Task[None]] = {}
        """Attempts sent and being recorded: no slot held, still excluded from claims."""
        self._returns = ClaimReturns(store, owner)
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._accepting = True
        self._sync_pace()

    def _sync_pace(self) -> None:
        now = self.monotonic()
        pace = {}
        for name, listener in self._listeners.items():
            old = self._pace.get(name)
            if old is not None and old.settings == pace_settings(listener):
                pace[name] = old
                continue
            pace[name] = Pace.for_listener(listener, now)
            if old is not None:
                pace[name].failing_since = old.failing_since
                if pace[name].claims_ahead:
                    pace[name].ahead = old.ahead
                else:
                    self._returns.hand_back(old)
        for name, old in self._pace.items():
            if name not in pace:
                self._returns.hand_back(old)  # a listener reloaded away
        self._pace = pace

    # -- control ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due deliveries now."""
        self._wakeup.set()

    def events_committed(self) -> None:
        """New events were committed: coalescing listeners look for updates to merge, then send."""
        for pace in self._pace.values():
            pace.coalesce_due = True
        self.wake()

    def set_listeners(
        self,
        listeners: list[ListenerConfig],
        ignore_paths: Mapping[str, Sequence[JsonPath]] | None = None,
    ) -> None:
        """Take a new listener set (reload); in-flight sends finish with their old settings.

        A listener whose rate and breaker settings did not change keeps its bucket and breaker.
        """
        self._listeners = {lst.name: lst for lst in listeners}
        if ignore_paths is not None:
            self._ignore = dict(ignore_paths)
        for name in self._listeners:
            self._inflight.setdefault(name, {})
        self._sync_pace()
        self.wake()

    def inflight_count(self) -> int:
        """Attempts not yet recorded (being sent, or sent and being recorded)."""
        return sum(len(v) for v in self._inflight.values()) + len(self._recording)

    def inflight_for(self, listener: str) -> int:
        """Deliveries to ``listener`` being sent right now."""
        return len(self._inflight.get(listener, {}))

    def listener_state(self, listener: str) -> str:
        """``paused``, ``breaker_open``, ``breaker_half_open`` or ``active`` (for status,
        metrics and /healthz)."""
        if listener in self._paused:
            return "paused"
        breaker = self.breaker_state(listener)
        if breaker in ("open", "half-open"):
            return "breaker_" + breaker.replace("-", "_")
        return "active"

    async def load_paused(self) -> None:
        """Read which listeners are paused, and each one's failure streak, from the store."""
        states = await self.store.list_listener_states()
        self._paused = {s.name for s in states if s.paused}
        self._paused_checked = self.monotonic()
        for state in states:
            pace = self._pace.get(state.name)
            if pace is not None:
                pace.failing_since = state.failing_since

    @property
    def paused(self) -> frozenset[str]:
        return frozenset(self._paused)

    def breaker_state(self, listener: str) -> str | None:
        """``closed``, ``open`` or ``half-open``; None when the listener has no breaker."""
        pace = self._pace.get(listener)
        return None if pace is None or pace.breaker is None else pace.breaker.state

    async def resume(self, listener: str) -> None:
        await self.store.set_listener_paused(listener, False, None, self.clock())
        self._resumed(listener)
        self.wake()

    def _resumed(self, name: str) -> None:
        self._paused.discard(name)
        listener = self._listeners.get(name)
        if listener is not None:
            # a fresh start: closed breaker, full bucket, new disable_after window
            old = self._pace.get(name)
            self._pace[name] = Pace.for_listener(listener, self.monotonic())
            if old is not None:
                self._returns.hand_back(old)

    async def refresh_paused(self, *, force: bool = False) -> None:
        """Take in pauses and resumes made in the store by another process (``pollbridge
        resume``); ``force`` skips the rate limit (the daemon saw the store's control version
        change)."""
        if not force and (
            not self._paused or self.monotonic() - self._paused_checked < PAUSED_REFRESH_S
        ):
            return
        self._paused_checked = self.monotonic()
        states = await self.store.list_listener_states()
        still = {s.name for s in states if s.paused}
        resumed = sorted(self._paused - still)
        for name in resumed:
            log.warning("listener %s was resumed", name, extra={"listener": name})
            self._resumed(name)
        self._paused = still
        if resumed:
            self.wake()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch until :meth:`stop`; store errors are logged and retried, never fatal."""
        await self.load_paused()
        while not self._stopping:
            self._wakeup.clear()
            try:
                wait_s = await self._dispatch_due()
            except StoreError as exc:
                log.error("delivery loop: %s; retrying in 1s", exc)
                wait_s = 1.0
            except Exception:
                # a bug must not stop every webhook: say so loudly, count it, go on
                self._internal_error(
                    "dispatcher", "delivery loop: unexpected error; retrying in 1s"
                )
                wait_s = 1.0
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wakeup.wait()

    async def _dispatch_due(self) -> float:
        """Start every due delivery that has a free slot; return how long to sleep."""
        if not self._accepting:
            return MAX_IDLE_S
        await self._returns.release()
        await self.refresh_paused()
        now = self.clock()
        now_s = now.timestamp()
        with_slots: list[str] = []
        waits = [PAUSED_REFRESH_S if self._paused else MAX_IDLE_S]
        self._rate_blocked = set()
        exclude = [d for tasks in self._inflight.values() for d in tasks]
        exclude.extend(self._recording)
        exclude.extend(i for pace in self._pace.values() for i in pace.ahead_ids())
        # A reload may replace the listener set while this pass awaits the store: iterate a
        # snapshot, and skip a listener that is gone by the time its turn comes.
        for name, listener in list(self._listeners.items()):
            pace = self._pace.get(name)
            if pace is None or self._listeners.get(name) is not listener:
                continue
            if pace.held_until > self.monotonic():
                waits.append(pace.held_until - self.monotonic())
                continue
            try:
                wait = await self._dispatch_listener(listener, pace, now, now_s, exclude)
            except StoreError:
                raise
            except Exception:
                backoff = self._hold(pace)
                waits.append(backoff)
                self._internal_error(
                    "dispatcher",
                    f"listener {name}: unexpected error while dispatching; it backs off "
                    f"{backoff:g}s, the other listeners go on",
                    name,
                )
                continue
            pace.internal_errors = 0
            if wait is None:
                with_slots.append(name)
            elif wait > 0:
                waits.append(wait)
        if with_slots:
            next_at = await self.store.next_due_at(with_slots, exclude)
            if next_at is not None:
                waits.append(max(0.0, next_at - self.clock().timestamp()))
        return min(waits)

    async def _dispatch_listener(
        self,
        listener: ListenerConfig,
        pace: Pace,
        now: datetime,
        now_s: float,
        exclude: list[int],
    ) -> float | None:
        """Claim and start what is due for one listener. Returns None when it still has free
        slots (ask the store when its next delivery is due), else how long to wait (0: the
        wake-up of an attempt's result will do)."""
        name = listener.name
        inflight = self._inflight.setdefault(name, {})
        if listener.coalesce and pace.coalesce_due:
            # before the pause check: a paused listener is the one furthest behind
            await coalesce(self.store, listener.name, pace, now, exclude, self._merge)
        if name in self._paused:
            await self._returns.release_now(pace, exclude)
            return 0.0
        free = listener.max_in_flight - len(inflight)
        # Claimed ahead, the next deliveries start the moment a slot frees, not a store round
        # trip later (while the claim waits behind the attempts being recorded); topped up
        # once half of them have started, so that a claim brings several.
        top_up_when = (AHEAD_ROUNDS - TOP_UP_ROUNDS) * listener.max_in_flight
        if free <= 0 and self._ahead_short(listener, pace) <= top_up_when:
            return 0.0
        mono = self.monotonic()
        if pace.breaker is not None:
            breaker_wait = pace.breaker.wait_s(mono)
            if breaker_wait > 0:
                await self._returns.release_now(pace, exclude)
                return breaker_wait if math.isfinite(breaker_wait) else 0.0
            free = min(free, pace.breaker.limit() or free)
        if pace.bucket is not None:
            tokens = pace.bucket.available(mono)
            if tokens == 0:
                self._rate_blocked.add(name)
                return pace.bucket.wait_s(mono)
            free = min(free, tokens)
        while free > 0 and (head := self._next_ahead(listener, pace)) is not None:
            if not self._start(listener, pace, head):
                break
            pace.ahead.popleft()
            free -= 1
        want = max(free, 0) + self._ahead_short(listener, pace)
        if want <= 0:
            return 0.0
        claim_s = self._claim_s(listener)
        claimed_at = self.monotonic()  # before the store's own clock starts the claim: never late
        due = await self.store.claim_deliveries(
            name, now_s, want, exclude, owner=self.owner, claim_s=claim_s
        )
        unstarted = []
        for delivery in due:
            exclude.append(delivery.id)
            if len(inflight) < listener.max_in_flight:
                if not self._start(listener, pace, delivery):
                    unstarted.append(delivery.id)
            elif self._accepting and self._pace.get(name) is pace and pace.claims_ahead:
                pace.ahead.append((delivery, claimed_at))
            else:
                unstarted.append(delivery.id)
        if unstarted:
            # The breaker opened (or the bucket ran dry, or a reload changed the listener's
            # pace) while the claim awaited the store: those go back to the queue unattempted,
            # with no retry used up.
            await self.store.release_claims(unstarted, owner=self.owner)
            for delivery_id in unstarted:
                exclude.remove(delivery_id)
        if not pace.claims_ahead:
            await self._returns.release_now(pace, exclude)
        if pace.bucket is not None and due and pace.bucket.available(self.monotonic()) == 0:
            self._rate_blocked.add(name)
            return pace.bucket.wait_s(self.monotonic())
        if pace.breaker is not None and pace.breaker.wait_s(self.monotonic()) > 0:
            wait = pace.breaker.wait_s(self.monotonic())
            return wait if math.isfinite(wait) else 0.0  # the probe's result wakes the loop
        if len(inflight) < listener.max_in_flight and len(due) < want:
            return None  # nothing more due now: ask the store when the next one is
        # Full (or a full claim: more may be due; the slots freed meanwhile woke the loop)
        return 0.0

    def _start(self, listener: ListenerConfig, pace: Pace, delivery: Delivery) -> bool:
        """Start one claimed delivery; False when its listener may not send right now."""
        mono = self.monotonic()
        if pace.breaker is not None and pace.breaker.wait_s(mono) > 0:
            return False
        if pace.bucket is not None and not pace.bucket.try_take(mono):
            return False
        probe = False
        if pace.breaker is not None:
            probe, transition = pace.breaker.start(mono)
            if transition is not None:
                log_transition(listener, transition)
        task = asyncio.create_task(self._attempt(listener, delivery, probe))
        self._inflight.setdefault(listener.name, {})[delivery.id] = task
        return True

    def _hold(self, pace: Pace) -> float:
        """After an unexpected error, a listener claims nothing for a while; return how long."""
        pace.internal_errors += 1
        backoff = INTERNAL_BACKOFF_S[min(pace.internal_errors, len(INTERNAL_BACKOFF_S)) - 1]
        pace.held_until = self.monotonic() + backoff
        self._returns.hand_back(pace)  # a claim must not outlive its lease waiting for the hold
        return backoff

    def _next_ahead(self, listener: ListenerConfig, pace: Pace) -> Delivery | None:
        """The next delivery claimed ahead, if its claim is young enough to start; a stale one
        gives every delivery claimed ahead back (claimed afresh at the next pass)."""
        head = pace.next_ahead(self.monotonic(), self._claim_s(listener) / 2)
        if head is None and pace.ahead:
            self._returns.hand_back(pace)
            self.wake()
        return head

    def _claim_s(self, listener: ListenerConfig) -> float:
        """How long a claim holds: the lease, and at least twice the listener's timeout."""
        return max(self.lease_s, 2 * listener.timeout.total_seconds())

    def _ahead_short(self, listener: ListenerConfig, pace: Pace) -> int:
        """How many more deliveries ``listener`` may claim ahead of its free slots: up to
        :data:`AHEAD_ROUNDS` rounds of its slots, enough to cover a claim that waits a few
        milliseconds."""
        if not pace.claims_ahead:
            return 0
        return AHEAD_ROUNDS * listener.max_in_flight - len(pace.ahead)

    def _start_ahead(self, name: str) -> None:
        """A slot of ``name`` freed up: start the next delivery claimed ahead, if it may."""
        listener, pace = self._listeners.get(name), self._pace.get(name)
        if listener is None or pace is None or not pace.ahead or not pace.claims_ahead:
            return
        if name in self._paused or not self._accepting or pace.held_until > self.monotonic():
            return
        if len(self._inflight.get(name, {})) >= listener.max_in_flight:
            return
        head = self._next_ahead(listener, pace)
        if head is not None and self._start(listener, pace, head):
            pace.ahead.popleft()

    def _internal_error(self, component: str, message: str, listener: str | None = None) -> None:
        """Log an unexpected exception with its traceback, and count it."""
        self.internal_errors += 1
        extra = {} if listener is None else {"listener": listener}
        log.exception(message, extra=extra)
        if self.on_internal_error is not None:
            self.on_internal_error(component)

    def _merge(self, events: Sequence[Event]) -> list[dict[str, Any]] | None:
        return merged_changes(events, self._ignore.get(events[0].source, ()))

    async def _attempt(self, listener: ListenerConfig, delivery: Delivery, probe: bool) -> None:
        name = listener.name
        settled = False
        try:
            result = redacted(
                await self.sender.send(listener, delivery.event, self.clock()), self.redact
            )
            next_at = None
            if not result.ok:  # (the schedule is a list built per call)
                failed = delivery.attempts + 1
                next_at = retry_at(listener.retry_s, failed, self.rng.random, result, self.clock())
            # What may stop the listener's next sends is settled, then the slot given back
            # before the record, so the next claim and this record share one store round
            # trip; the delivery stays excluded from claims until it is recorded.
            settled = self._account(listener, result, probe)
            reason = self._pause_reason(listener, result)
            if reason is not None:
                await self._pause(name, reason)
            task = self._inflight.get(name, {}).pop(delivery.id, None)
            if task is not None:
                self._recording[delivery.id] = task
                self._start_ahead(name)
                self.wake()
            state = await record_attempt(self.store, delivery.id, result, next_at, self.clock)
            log_attempt(listener, delivery, result, state, next_at, self.clock().timestamp())
            if self.on_result is not None:
                self.on_result(listener, delivery, result, state)
            if reason is not None:
                await self._log_pause(listener, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._internal_error(
                "sender",
                f"delivery {delivery.id} to {name}: unexpected error; it stays pending",
                name,
            )
            pace = self._pace.get(name)
            if pace is not None:
                self._hold(pace)
        finally:
            pace = self._pace.get(name)
            if probe and not settled and pace is not None and pace.breaker is not None:
                pace.breaker.release_probe()
            self._inflight.get(name, {}).pop(delivery.id, None)
            self._recording.pop(delivery.id, None)
            self.wake()

    def _account(self, listener: ListenerConfig, result: AttemptResult, probe: bool) -> bool:
        """Feed an attempt's result to the breaker and the failure streak; True if it counted."""
        pace = self._pace.get(listener.name)
        if pace is None or not result.sent:
            return False  # our own failure (the body): says nothing about the receiver
        transition = pace.account(result, probe, self.monotonic(), self.clock)
        if transition is not None:
            log_transition(listener, transition)
            if not pace.claims_ahead:
                self._returns.hand_back(pace)  # the breaker opened: none of those may start
        return True

    def _pause_reason(self, listener: ListenerConfig, result: AttemptResult) -> str | None:
        """Why this result pauses the listener (410 Gone, or ``disable_after`` reached)."""
        if listener.name in self._paused or result.ok:
            return None
        since = getattr(self._pace.get(listener.name), "failing_since", None)
        return pause_reason(listener, result, since, self.clock())

    async def _log_pause(self, listener: ListenerConfig, result: AttemptResult) -> None:
        since = getattr(self._pace.get(listener.name), "failing_since", None)
        failing = None if since is None else failing_for(self.clock(), since)
        waiting = 0 if result.gone else await self.store.pending_count([listener.name])
        log_pause(listener, result.gone, failing, waiting)

    async def _pause(self, name: str, reason: str) -> None:
        self._paused.add(name)
        self._paused_checked = self.monotonic()
        try:
            await self.store.set_listener_paused(name, True, reason, self.clock())
        except StoreError as exc:  # the attempt is recorded all the same
            log.error("pausing %s: %s; it is paused in this process only", name, exc)

    # -- stopping ---------------------------------------------------------------------------

    async def stop(self, grace_s: float) -> None:
        """Start nothing new; let in-flight sends finish within ``grace_s``, then cancel them.

        A cancelled send stays pending in the store and is retried after a restart.
        """
        self._accepting = False
        await self._returns.release_all(self._pace.values())
        tasks = [t for tasks in self._inflight.values() for t in tasks.values()]
        tasks.extend(self._recording.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        self._stopping = True
        self.wake()

    async def run_until_idle(self) -> None:
        """Deliver everything due now and return when nothing more is due (``run --once``).

        A delivery held back only by its listener's ``rate`` is still due: it is waited for.
        """
        await self.load_paused()
        while True:
            self._wakeup.clear()
            wait_s = await self._dispatch_due()
            if self.inflight_count() == 0 and wait_s > 0 and not await self._rate_held():
                await self._returns.release_all(self._pace.values())
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s if wait_s > 0 else 0.01):
                    await self._wakeup.wait()

    async def _rate_held(self) -> bool:
        if not self._rate_blocked:
            return False
        next_at = await self.store.next_due_at(sorted(self._rate_blocked), [])
        return next_at is not None and next_at <= self.clock().timestamp()
