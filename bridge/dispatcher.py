"""Sends pending deliveries as soon as they are due, in order per (listener, key).

Woken in-process when a poll commits; otherwise it sleeps until the next retry is due.
Delivery state lives in the store, so a crash or restart resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime

from bridge.config import ListenerConfig
from bridge.core.retry import next_delivery_delay
from bridge.errors import StoreError
from bridge.models import AttemptResult, Delivery
from bridge.sender import Sender
from bridge.store import Store

log = logging.getLogger("pollbridge.deliver")

MAX_IDLE_S = 60.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    """Runs the delivery loop for every configured listener."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        listeners: list[ListenerConfig],
        *,
        clock: Callable[[], datetime] = _utcnow,
        rng: random.Random | None = None,
        on_result: Callable[[ListenerConfig, Delivery, AttemptResult, str], None] | None = None,
    ):
        self.store = store
        self.sender = sender
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.on_result = on_result
        self._listeners = {lst.name: lst for lst in listeners}
        self._paused: set[str] = set()
        self._inflight: dict[str, dict[int, asyncio.Task[None]]] = {n: {} for n in self._listeners}
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._accepting = True

    # -- control ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due deliveries now (called after a commit)."""
        self._wakeup.set()

    def set_listeners(self, listeners: list[ListenerConfig]) -> None:
        """Take a new listener set (reload); in-flight sends finish with their old settings."""
        self._listeners = {lst.name: lst for lst in listeners}
        for name in self._listeners:
            self._inflight.setdefault(name, {})
        self.wake()

    def inflight_count(self) -> int:
        return sum(len(v) for v in self._inflight.values())

    async def load_paused(self) -> None:
        self._paused = {s.name for s in await self.store.list_listener_states() if s.paused}

    @property
    def paused(self) -> frozenset[str]:
        return frozenset(self._paused)

    async def resume(self, listener: str) -> None:
        await self.store.set_listener_paused(listener, False, None, self.clock())
        self._paused.discard(listener)
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
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wakeup.wait()

    async def _dispatch_due(self) -> float:
        """Start every due delivery that has a free slot; return how long to sleep."""
        if not self._accepting:
            return MAX_IDLE_S
        now = self.clock()
        now_s = now.timestamp()
        with_slots: list[str] = []
        exclude = [d for tasks in self._inflight.values() for d in tasks]
        for name, listener in self._listeners.items():
            if name in self._paused:
                continue
            free = listener.max_in_flight - len(self._inflight[name])
            if free <= 0:
                continue
            due = await self.store.due_deliveries(name, now_s, free, exclude)
            for delivery in due:
                task = asyncio.create_task(self._attempt(listener, delivery))
                self._inflight[name][delivery.id] = task
                exclude.append(delivery.id)
            if len(self._inflight[name]) < listener.max_in_flight:
                with_slots.append(name)
        if not with_slots:
            return MAX_IDLE_S
        next_at = await self.store.next_due_at(with_slots, exclude)
        if next_at is None:
            return MAX_IDLE_S
        return min(MAX_IDLE_S, max(0.0, next_at - self.clock().timestamp()))

    async def _attempt(self, listener: ListenerConfig, delivery: Delivery) -> None:
        try:
            result = await self.sender.send(listener, delivery.event, self.clock())
            failed = delivery.attempts + 1
            next_at: float | None = None
            if not result.ok:
                delay = next_delivery_delay(
                    listener.retry_s, failed, self.rng.random(), result.retry_after_s
                )
                next_at = None if delay is None else self.clock().timestamp() + delay
                if result.gone:
                    # 410: the listener says it is gone; keep its deliveries waiting
                    next_at = self.clock().timestamp() if next_at is None else next_at
            state = await self._record(delivery, result, next_at)
            self._report(listener, delivery, result, state, next_at)
            if result.gone and listener.name not in self._paused:
                self._paused.add(listener.name)
                await self.store.set_listener_paused(
                    listener.name, True, "the listener answered 410 Gone", self.clock()
                )
                log.warning(
                    "listener %s answered 410 Gone: paused; its deliveries wait "
                    "(resume with: pollbridge resume %s)",
                    listener.name,
                    listener.name,
                    extra={"listener": listener.name},
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "delivery %s to %s: unexpected error; it stays pending",
                delivery.id,
                listener.name,
            )
        finally:
            self._inflight.get(listener.name, {}).pop(delivery.id, None)
            self.wake()

    async def _record(
        self, delivery: Delivery, result: AttemptResult, next_at: float | None
    ) -> str:
        # The attempt happened; recording it must not be lost to a passing lock.
        for pause_s in (0.1, 0.5, 1.0, 2.0, 5.0):
            try:
                return await self.store.record_attempt(
                    delivery.id, self.clock(), result, next_at=next_at
                )
            except StoreError as exc:
                log.warning("recording delivery %s: %s; retrying", delivery.id, exc)
                await asyncio.sleep(pause_s)
        return await self.store.record_attempt(delivery.id, self.clock(), result, next_at=next_at)

    def _report(
        self,
        listener: ListenerConfig,
        delivery: Delivery,
        result: AttemptResult,
        state: str,
        next_at: float | None,
    ) -> None:
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
        else:
            wait = (next_at or 0) - self.clock().timestamp()
            log.warning(
                "delivery of %s to %s failed (attempt %d): %s; next attempt in %.1fs",
                delivery.event.id,
                listener.name,
                delivery.attempts + 1,
                result.error,
                max(0.0, wait),
                extra=extra,
            )
        if self.on_result is not None:
            self.on_result(listener, delivery, result, state)

    # -- stopping ---------------------------------------------------------------------------

    async def stop(self, grace_s: float) -> None:
        """Start nothing new; let in-flight sends finish within ``grace_s``, then cancel them.

        A cancelled send stays pending in the store and is retried after a restart.
        """
        self._accepting = False
        tasks = [t for tasks in self._inflight.values() for t in tasks.values()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        self._stopping = True
        self.wake()

    async def run_until_idle(self) -> None:
        """Deliver everything due now and return when nothing more is due (``run --once``)."""
        await self.load_paused()
        while True:
            self._wakeup.clear()
            wait_s = await self._dispatch_due()
            if self.inflight_count() == 0 and wait_s > 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s if wait_s > 0 else 0.01):
                    await self._wakeup.wait()
