"""The dispatcher's listener protections, in-process with a fixed clock and a mock transport."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bridge.config import ListenerConfig
from bridge.core.patch import make_patch
from bridge.dispatcher import Dispatcher
from bridge.http.sender import Sender
from bridge.models import Change
from bridge.store import DeliveryQuery, PollCommit
from bridge.store.sqlite import SQLiteStore
from tests.support.state import EVERYTHING


class Clock:
    """Wall and monotonic time that move only when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, tzinfo=UTC)
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


def _listener(**extra: Any) -> ListenerConfig:
    return ListenerConfig(name="hooks", url="https://hooks.example.com/in", **extra)


async def _commit(store: SQLiteStore, clock: Clock, keys: list[str]) -> None:
    changes = [
        Change("created", k, k, None, {"id": k}, make_patch(None, {"id": k}), "h") for k in keys
    ]
    await store.commit_poll(
        PollCommit("orders", clock.now, 0.0, [], [], changes, [["hooks"]] * len(changes), 1, "f")
    )


def _dispatcher(
    store, clock, listener, status, monotonic=None
) -> tuple[Dispatcher, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        # a streamed body, as from a real server: the sender reads at most an excerpt of it
        return httpx.Response(status(), stream=httpx.ByteStream(b"ok"))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    dispatcher = Dispatcher(
        store,
        Sender(client),
        [listener],
        clock=lambda: clock.now,
        monotonic=monotonic or (lambda: clock.mono),
    )
    return dispatcher, seen


async def _attempts(store: SQLiteStore) -> list[tuple[str, int]]:
    """Each delivery's (state, attempts), oldest first."""
    found = await store.list_deliveries(DeliveryQuery(limit=EVERYTHING))
    return [(d.state, d.attempts) for d in sorted(found, key=lambda d: d.id)]


async def test_an_open_breaker_claims_nothing_so_no_retry_is_used(store):
    """While open, due deliveries are not attempted; after the cooldown one probe goes out."""
    clock = Clock()
    status = {"code": 500}
    listener = _listener(breaker_failures=2, breaker_cooldown="60s", retry=["1s"] * 3)
    dispatcher, seen = _dispatcher(store, clock, listener, lambda: status["code"])
    await _commit(store, clock, ["1"])
    await dispatcher.run_until_idle()
    clock.advance(2)
    await dispatcher.run_until_idle()
    assert dispatcher.breaker_state("hooks") == "open"
    assert await _attempts(store) == [("pending", 2)]
    for _ in range(5):  # well past every retry, but inside the cooldown
        clock.advance(10)
        await dispatcher.run_until_idle()
    assert len(seen) == 2
    assert await _attempts(store) == [("pending", 2)]
    status["code"] = 204
    clock.advance(15)
    await dispatcher.run_until_idle()
    assert len(seen) == 3
    assert await _attempts(store) == [("delivered", 3)]
    assert dispatcher.breaker_state("hooks") == "closed"


async def test_a_template_failure_goes_dead_without_touching_breaker_or_streak(store):
    """Our own render error is dead at once and says nothing about the receiver."""
    clock = Clock()
    listener = _listener(
        template="{{ 1 // 0 }}", content_type="text/plain", breaker_failures=1, disable_after="1s"
    )
    dispatcher, seen = _dispatcher(store, clock, listener, lambda: 204)
    await _commit(store, clock, ["1", "2"])
    await dispatcher.run_until_idle()
    clock.advance(5)
    await dispatcher.run_until_idle()
    assert seen == []
    assert await _attempts(store) == [("dead", 1), ("dead", 1)]
    assert dispatcher.breaker_state("hooks") == "closed"
    assert dispatcher.paused == frozenset()
    (state,) = await store.list_listener_states()
    assert state.failing_since is None
    (error,) = {d.last_error for d in await store.list_deliveries(DeliveryQuery(limit=EVERYTHING))}
    assert "cannot build the request body: template, line 1: ZeroDivisionError" in error


async def test_rate_limited_deliveries_still_count_as_due_for_run_once(store):
    """run --once waits for the rate limit instead of exiting with deliveries pending."""
    clock = Clock()
    listener = _listener(rate="20/s")
    # the bucket refills in real seconds: the loop really sleeps for it
    dispatcher, seen = _dispatcher(store, clock, listener, lambda: 204, time.monotonic)
    await _commit(store, clock, [str(i) for i in range(5)])
    await dispatcher.run_until_idle()
    assert len(seen) == 5
    assert await store.pending_count(["hooks"]) == 0


async def test_disable_after_pauses_and_resume_starts_afresh(store):
    """Failures for disable_after pause the listener; resume clears the streak and the pause."""
    clock = Clock()
    listener = _listener(breaker_failures=0, disable_after="1m", retry=["10s"] * 20)
    dispatcher, seen = _dispatcher(store, clock, listener, lambda: 503)
    await _commit(store, clock, ["1"])
    for _ in range(7):
        await dispatcher.run_until_idle()
        clock.advance(12)
    assert dispatcher.paused == {"hooks"}
    (state,) = await store.list_listener_states()
    assert state.paused and state.paused_reason.startswith(
        "disabled: nothing but failed deliveries"
    )
    sent = len(seen)
    clock.advance(60)
    await dispatcher.run_until_idle()
    assert len(seen) == sent  # paused: nothing goes out
    await dispatcher.resume("hooks")
    (state,) = await store.list_listener_states()
    assert not state.paused and state.failing_since is None
    await dispatcher.run_until_idle()
    assert len(seen) == sent + 1
