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
from bridge.delivery_log import log_attempt, log_transition
from bridge.delivery_pace import (
    ClaimReturns,
    Pace,
    carry_paces,
    claim_seconds,
    coalesce,
    listener_state,
    redacted,
)
from bridge.delivery_pause import PAUSED_REFRESH_S, Pauses
from bridge.delivery_record import AttemptRecorder, Finished
from bridge.errors import StoreError
from bridge.http.sender import Sender
from bridge.models import AttemptResult, Delivery, Event
from bridge.store import Store

log = logging.getLogger("pollbridge.deliver")

MAX_IDLE_S = 60.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    """Runs the delivery loop for every configured listener.

    One class on purpose: claiming, pacing (bucket, breaker, pause, coalescing), starting
    and accounting for attempts share the in-flight set and each listener's pace, and the
    per-key order and no-retry-burned rules are readable only where all of them are in view.
    A busy slot is one task that goes on with the deliveries claimed ahead; what it sent is
    recorded in batches (:mod:`bridge.delivery_record`). What it logs lives in
    :mod:`bridge.delivery_log`, pauses in :mod:`bridge.delivery_pause`.
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
        self._pauses = Pauses(store, clock, monotonic, resumed=self._resumed)
        self._rate_blocked: set[str] = set()
        self._inflight: dict[str, dict[int, asyncio.Task[None]]] = {n: {} for n in self._listeners}
        """Attempts whose request is being sent, by listener (each holds one of its slots)."""
        self._recording: set[int] = set()
        """Deliveries sent and being recorded: no slot held, still excluded from claims."""
        self._recorder = AttemptRecorder(store, clock, self._recorded, self.wake)
        self._returns = ClaimReturns(store, owner)
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._accepting = True
        self._pace = carry_paces(self._pace, self._listeners, self.monotonic(), self._returns)

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
        self._pace = carry_paces(self._pace, self._listeners, self.monotonic(), self._returns)
        self.wake()

    def inflight_count(self) -> int:
        """Attempts not yet recorded (being sent, or sent and being recorded), and pauses
        being logged."""
        inflight = sum(len(v) for v in self._inflight.values())
        return inflight + len(self._recording) + self._recorder.following

    def inflight_for(self, listener: str) -> int:
        """Deliveries to ``listener`` being sent right now."""
        return len(self._inflight.get(listener, {}))

    def listener_state(self, listener: str) -> str:
        """``paused``, ``breaker_open``, ``breaker_half_open`` or ``active`` (for status,
        metrics and /healthz)."""
        return listener_state(listener in self._pauses, self.breaker_state(listener))

    async def load_paused(self) -> None:
        """Read which listeners are paused, and each one's failure streak, from the store."""
        for state in await self._pauses.load():
            pace = self._pace.get(state.name)
            if pace is not None:
                pace.failing_since = state.failing_since

    @property
    def paused(self) -> frozenset[str]:
        return frozenset(self._pauses.names)

    def breaker_state(self, listener: str) -> str | None:
        """``closed``, ``open`` or ``half-open``; None when the listener has no breaker."""
        pace = self._pace.get(listener)
        return None if pace is None or pace.breaker is None else pace.breaker.state

    async def resume(self, listener: str) -> None:
        await self._pauses.resume(listener)
        self.wake()

    def _resumed(self, name: str) -> None:
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
        if await self._pauses.refresh(force=force):
            self.wake()

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
        waits = [PAUSED_REFRESH_S if self._pauses else MAX_IDLE_S]
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
        if name in self._pauses:
            await self._returns.release_now(pace, exclude)
            return 0.0
        free = listener.max_in_flight - len(inflight)
        # Claimed ahead, the next deliveries start the moment a slot frees, not a store round
        # trip later (while the claim waits behind the attempts being recorded); topped up
        # once half of them have started, so that a claim brings several.
        if free <= 0 and not pace.wants_top_up(listener.max_in_flight):
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
        want = max(free, 0) + pace.ahead_short(listener.max_in_flight)
        if want <= 0:
            return 0.0
        claim_s = claim_seconds(listener, self.lease_s)
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
        """Start one claimed delivery in a slot of its own; False when its listener may not
        send right now."""
        probe = self._admit(listener, pace)
        if probe is None:
            return False
        task = asyncio.create_task(self._run_slot(listener, delivery, probe))
        self._inflight.setdefault(listener.name, {})[delivery.id] = task
        return True

    def _admit(self, listener: ListenerConfig, pace: Pace) -> bool | None:
        """Take what one more attempt needs (a token, the breaker's leave): None when it may
        not start now, else whether it is the breaker's probe."""
        mono = self.monotonic()
        if pace.breaker is not None and pace.breaker.wait_s(mono) > 0:
            return None
        if pace.bucket is not None and not pace.bucket.try_take(mono):
            return None
        probe = False
        if pace.breaker is not None:
            probe, transition = pace.breaker.start(mono)
            if transition is not None:
                log_transition(listener, transition)
        return probe

    async def _run_slot(self, listener: ListenerConfig, delivery: Delivery, probe: bool) -> None:
        """Send ``delivery``, then the next one claimed ahead while this slot may: a task per
        busy slot, not one per attempt."""
        slot = asyncio.current_task()
        while True:
            await self._attempt(listener, delivery, probe)
            following = self._following(listener.name, slot)
            if following is None:
                return
            listener, delivery, probe = following

    def _hold(self, pace: Pace) -> float:
        """After an unexpected error, a listener claims nothing for a while; return how long."""
        self._returns.hand_back(pace)  # a claim must not outlive its lease waiting for the hold
        return pace.hold(self.monotonic())

    def _next_ahead(self, listener: ListenerConfig, pace: Pace) -> Delivery | None:
        """The next delivery claimed ahead, if its claim is young enough to start; a stale one
        gives every delivery claimed ahead back (claimed afresh at the next pass)."""
        head = pace.next_ahead(self.monotonic(), claim_seconds(listener, self.lease_s) / 2)
        if head is None and pace.ahead:
            self._returns.hand_back(pace)
            self.wake()
        return head

    def _following(
        self, name: str, slot: asyncio.Task[Any] | None
    ) -> tuple[ListenerConfig, Delivery, bool] | None:
        """The ``slot`` of ``name`` freed up: the next delivery claimed ahead it goes on with
        (the listener as configured now, and whether it is the breaker's probe), if it may."""
        listener, pace = self._listeners.get(name), self._pace.get(name)
        if listener is None or pace is None or not pace.ahead or not pace.claims_ahead:
            return None
        if name in self._pauses or not self._accepting or pace.held_until > self.monotonic():
            return None
        inflight = self._inflight.setdefault(name, {})
        if len(inflight) >= listener.max_in_flight:
            return None
        head = self._next_ahead(listener, pace)
        if head is None:
            return None
        probe = self._admit(listener, pace)
        if probe is None:
            return None
        pace.ahead.popleft()
        if slot is not None:
            inflight[head.id] = slot
        return listener, head, probe

    def _internal_error(
        self,
        component: str,
        message: str,
        listener: str | None = None,
        exc: BaseException | None = None,
    ) -> None:
        """Log an unexpected exception (``exc``, else the one being handled) with its
        traceback, and count it."""
        self.internal_errors += 1
        extra = {} if listener is None else {"listener": listener}
        log.error(message, exc_info=exc or True, extra=extra)
        if self.on_internal_error is not None:
            self.on_internal_error(component)

    def _sender_fault(
        self, delivery_id: int, name: str, what: str, exc: BaseException | None = None
    ) -> None:
        """An unexpected error in one delivery's path: logged and counted, and its listener
        held for a while; the delivery stays pending (sent again)."""
        self._internal_error(
            "sender", f"delivery {delivery_id} to {name}: {what}; it stays pending", name, exc
        )
        pace = self._pace.get(name)
        if pace is not None:
            self._hold(pace)

    def _merge(self, events: Sequence[Event]) -> list[dict[str, Any]] | None:
        return merged_changes(events, self._ignore.get(events[0].source, ()))

    async def _attempt(self, listener: ListenerConfig, delivery: Delivery, probe: bool) -> None:
        """Send one delivery and hand its result to the recorder."""
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
            # before the record, so that the slot goes on and the record joins the others
            # written together; the delivery stays excluded from claims until it is recorded.
            settled = self._account(listener, result, probe)
            reason = self._pauses.reason(listener, result, self._failing_since(name))
            if reason is not None:
                await self._pauses.pause(name, reason)
            self._recording.add(delivery.id)
            self._recorder.submit(Finished(listener, delivery, result, next_at, reason))
        except asyncio.CancelledError:
            raise
        except Exception:
            self._sender_fault(delivery.id, name, "unexpected error")
        finally:
            pace = self._pace.get(name)
            if probe and not settled and pace is not None and pace.breaker is not None:
                pace.breaker.release_probe()
            self._inflight.get(name, {}).pop(delivery.id, None)
            self.wake()

    def _recorded(self, finished: Finished, outcome: str | BaseException) -> None:
        """An attempt's record was written (``outcome`` is the delivery's state) or could not
        be (the delivery stays pending, and is sent again)."""
        listener, delivery, result, next_at, reason = finished
        self._recording.discard(delivery.id)
        if isinstance(outcome, BaseException):
            self._sender_fault(delivery.id, listener.name, "recording its attempt failed", outcome)
            return
        try:
            log_attempt(listener, delivery, result, outcome, next_at, self.clock().timestamp())
            if self.on_result is not None:
                self.on_result(listener, delivery, result, outcome)
        except Exception:
            self._internal_error("sender", f"delivery {delivery.id}: after its record")
        if reason is not None:
            self._recorder.follow(
                self._pauses.log(listener, result, self._failing_since(listener.name))
            )

    def _failing_since(self, name: str) -> datetime | None:
        return getattr(self._pace.get(name), "failing_since", None)

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

    async def stop(self, grace_s: float) -> None:
        """Start nothing new; let in-flight sends finish within ``grace_s``, then cancel them.

        A cancelled send stays pending in the store and is retried after a restart.
        """
        self._accepting = False
        await self._returns.release_all(self._pace.values())
        deadline = asyncio.get_running_loop().time() + grace_s
        pending: set[asyncio.Task[None]] = set()
        slots = {t for tasks in self._inflight.values() for t in tasks.values()}
        if slots:
            _done, pending = await asyncio.wait(slots, timeout=grace_s)
        if not pending:  # then the records of what was sent, and the pauses they log
            pending = await self._recorder.drain(deadline)
        pending |= self._recorder.tasks()  # what is still running now is cancelled
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
