"""The delivery loop survives what goes wrong in one listener's path: the others keep delivering."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bridge.config import ListenerConfig
from bridge.core.patch import make_patch
from bridge.dispatcher import Dispatcher
from bridge.errors import StoreError
from bridge.http.sender import Sender
from bridge.models import AttemptResult, Change, Delivery
from bridge.store import DeliveryInfo, DeliveryQuery, PollCommit
from bridge.store.sqlite import SQLiteStore
from tests.support.state import EVERYTHING

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
MONO = 1000.0


class HookedStore(SQLiteStore):
    """A real SQLite store that runs ``before_claim[listener]`` while a claim awaits the store,
    the moment at which in-flight attempts finish and reloads land in a running daemon. It
    keeps the size of every ``record_attempts`` batch, and can fail the next ``fail`` batches
    (a locked database) or hold each one for ``slow_s``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_claim: dict[str, Any] = {}
        self.released: list[int] = []
        self.batches: list[int] = []
        self.fail = 0
        self.slow_s = 0.0

    async def record_attempts(self, attempts: Sequence[Any]) -> list[str | StoreError]:
        self.batches.append(len(attempts))
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        if self.fail:
            self.fail -= 1
            return [StoreError("record_attempt", "database is locked")] * len(attempts)
        return await super().record_attempts(attempts)

    async def claim_deliveries(self, listener: str, *args: Any, **kwargs: Any) -> list[Delivery]:
        due = await super().claim_deliveries(listener, *args, **kwargs)
        hook = self.before_claim.pop(listener, None)
        if hook is not None:
            hook()
        return due

    async def release_claims(self, delivery_ids: Sequence[int], *, owner: str) -> None:
        self.released.extend(delivery_ids)
        await super().release_claims(delivery_ids, owner=owner)


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[HookedStore]:
    s = HookedStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


def _listener(name: str, **extra: Any) -> ListenerConfig:
    return ListenerConfig(name=name, url=f"https://{name}.example.com/in", **extra)


async def _commit(store: SQLiteStore, keys: list[str], listeners: list[str]) -> None:
    changes = [
        Change("created", k, k, None, {"id": k}, make_patch(None, {"id": k}), "h") for k in keys
    ]
    await store.commit_poll(
        PollCommit("orders", NOW, 0.0, [], [], changes, [listeners] * len(changes), 1, "f")
    )


async def _deliveries(store: SQLiteStore, listener: str) -> list[DeliveryInfo]:
    """The deliveries to ``listener``, oldest first."""
    found = await store.list_deliveries(DeliveryQuery(listener=listener, limit=EVERYTHING))
    return sorted(found, key=lambda d: d.id)


async def _states(store: SQLiteStore, listener: str) -> list[tuple[str, int]]:
    return [(d.state, d.attempts) for d in await _deliveries(store, listener)]


class Recording:
    """A transport answering 500 to host ``bad`` and 204 to everyone else."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host.split(".")[0])
        return httpx.Response(500 if request.url.host.startswith("bad.") else 204)


async def _run_until(
    dispatcher: Dispatcher,
    store: SQLiteStore,
    listener: str,
    done: Callable[[list[tuple[str, int]]], bool],
    timeout_s: float = 10,
) -> None:
    """Run the dispatcher until ``done`` holds for the (state, attempts) of ``listener``'s
    deliveries."""
    task = asyncio.create_task(dispatcher.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not done(await _states(store, listener)):
                assert not task.done(), task  # the loop must never end by itself
                await asyncio.sleep(0.01)
    finally:
        await dispatcher.stop(1)
        await asyncio.wait_for(task, 5)


def _dispatcher(store: SQLiteStore, sender: Sender, listeners: list[ListenerConfig], **kw: Any):
    return Dispatcher(store, sender, listeners, clock=lambda: NOW, monotonic=lambda: MONO, **kw)


async def test_a_breaker_that_opens_during_a_claim_sends_the_claim_back_unattempted(store):
    """The breaker opening between claim and start (in-flight failures finishing) raises
    nothing: the claimed deliveries go back to the queue with no attempt used up."""
    transport = Recording()
    sender = Sender(httpx.AsyncClient(transport=httpx.MockTransport(transport)))
    bad = _listener("bad", breaker_failures=2, max_in_flight=16)
    good = _listener("good", max_in_flight=16)
    await _commit(store, [f"k{i}" for i in range(6)], ["bad", "good"])
    dispatcher = _dispatcher(store, sender, [bad, good])

    def trip() -> None:
        breaker = dispatcher._pace["bad"].breaker
        for _ in range(2):
            breaker.record_failure(MONO)
        assert breaker.state == "open"

    store.before_claim["bad"] = trip
    await _run_until(dispatcher, store, "good", lambda states: states == [("delivered", 1)] * 6)
    assert transport.hosts.count("bad") == 0
    assert await _states(store, "bad") == [("pending", 0)] * 6
    assert sorted(store.released) == sorted(d.id for d in await _deliveries(store, "bad"))


class UnpausableStore(HookedStore):
    """A store whose pause write fails (a locked database, say)."""

    async def set_listener_paused(self, *args: Any, **kwargs: Any) -> None:
        raise StoreError("set_listener_paused", "database is locked", location="test")


async def test_a_410_whose_pause_cannot_be_written_is_still_recorded_and_pauses(tmp_path, caplog):
    """The attempt that answered 410 Gone is recorded even when writing the pause fails, and
    the listener sends nothing more from this process."""
    store = UnpausableStore(tmp_path / "state.db")
    await store.open()
    try:
        sent: list[str] = []

        def gone(request: httpx.Request) -> httpx.Response:
            sent.append(str(request.url))
            return httpx.Response(410)

        sender = Sender(httpx.AsyncClient(transport=httpx.MockTransport(gone)))
        await _commit(store, ["a", "b", "c"], ["hooks"])
        dispatcher = _dispatcher(store, sender, [_listener("hooks", max_in_flight=1)])
        await _run_until(dispatcher, store, "hooks", lambda states: ("pending", 1) in states)
        assert len(sent) == 1
        assert sorted(await _states(store, "hooks")) == [
            ("pending", 0),
            ("pending", 0),
            ("pending", 1),
        ]
        assert dispatcher.listener_state("hooks") == "paused"
        assert "paused in this process only" in caplog.text
    finally:
        await store.close()


class ExplodingSender(Sender):
    """A sender with a bug that shows only for one listener."""

    async def send(self, listener: ListenerConfig, *args: Any, **kwargs: Any) -> Any:
        if listener.name == "bad":
            raise RuntimeError("injected bug in send")
        return await super().send(listener, *args, **kwargs)


async def test_an_exception_in_one_listeners_send_leaves_the_others_delivering(store, caplog):
    """An unexpected exception in a send is logged with its traceback and counted; that
    delivery stays pending unattempted, and every other listener keeps delivering."""
    components: list[str] = []
    sender = ExplodingSender(httpx.AsyncClient(transport=httpx.MockTransport(Recording())))
    listeners = [_listener("bad"), _listener("good")]
    await _commit(store, ["a", "b", "c"], ["bad", "good"])
    dispatcher = _dispatcher(store, sender, listeners, on_internal_error=components.append)
    await _run_until(dispatcher, store, "good", lambda states: states == [("delivered", 1)] * 3)
    assert await _states(store, "bad") == [("pending", 0)] * 3
    assert dispatcher.internal_errors >= 1
    assert set(components) == {"sender"}
    assert "injected bug in send" in caplog.text  # the traceback is in the log


async def test_an_exception_while_dispatching_one_listener_backs_it_off_only(store):
    """A bug in one listener's claim path holds that listener back; the loop goes on."""
    components: list[str] = []
    sender = Sender(httpx.AsyncClient(transport=httpx.MockTransport(Recording())))
    await _commit(store, ["a", "b"], ["bad", "good"])
    dispatcher = _dispatcher(
        store, sender, [_listener("bad"), _listener("good")], on_internal_error=components.append
    )

    def explode() -> None:
        raise RuntimeError("injected bug in dispatch")

    store.before_claim["bad"] = explode
    await _run_until(dispatcher, store, "good", lambda states: states == [("delivered", 1)] * 2)
    assert components == ["dispatcher"]
    assert dispatcher._pace["bad"].held_until > MONO


async def test_a_reload_removing_a_listener_mid_pass_does_not_kill_the_loop(store):
    """set_listeners dropping a listener while the loop awaits the store: no KeyError, the
    kept listener delivers, the dropped one's deliveries stay queued."""
    sender = Sender(httpx.AsyncClient(transport=httpx.MockTransport(Recording())))
    keep, drop = _listener("keep"), _listener("drop")
    await _commit(store, ["a", "b"], ["keep", "drop"])
    dispatcher = _dispatcher(store, sender, [keep, drop])
    store.before_claim["keep"] = lambda: dispatcher.set_listeners([keep])
    await _run_until(dispatcher, store, "keep", lambda states: states == [("delivered", 1)] * 2)
    assert await _states(store, "drop") == [("pending", 0)] * 2
    assert dispatcher.internal_errors == 0


async def test_run_until_idle_survives_a_bug_in_one_listener(store):
    """``run --once``'s loop also keeps going, and the error is counted for its exit code."""
    sender = ExplodingSender(httpx.AsyncClient(transport=httpx.MockTransport(Recording())))
    await _commit(store, ["a"], ["bad", "good"])
    dispatcher = _dispatcher(store, sender, [_listener("bad"), _listener("good")])
    async with asyncio.timeout(10):
        await dispatcher.run_until_idle()
    assert await _states(store, "good") == [("delivered", 1)]
    assert dispatcher.internal_errors >= 1


def test_internal_errors_are_a_metric():
    """pollbridge_internal_errors_total{component} counts what the daemon caught."""
    from bridge.metrics import Metrics

    metrics = Metrics()
    metrics.internal_error("dispatcher")
    body, _ = metrics.render()
    assert b'pollbridge_internal_errors_total{component="dispatcher"} 1.0' in body


class _GatedSender:
    """Holds the first send until ``gate`` is set; answers success."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[str] = []

    async def send(self, listener: ListenerConfig, event: Any, now: datetime) -> AttemptResult:
        if not self.sent:
            self.sent.append(event.key)
            await self.gate.wait()
        else:
            self.sent.append(event.key)
        return AttemptResult(True, 204, 0.001)


async def test_deliveries_claimed_ahead_for_half_their_lease_are_given_back_not_sent(store):
    """A slow listener: what was claimed ahead while its one slot was busy for longer than half
    the claim's lease goes back to the queue unattempted and is claimed afresh, so no claim
    can expire (and another instance send it too) before its delivery starts."""
    sender = _GatedSender()
    slow = _listener("slow", max_in_flight=1)
    await _commit(store, [f"k{i}" for i in range(6)], ["slow"])
    mono = [MONO]
    dispatcher = Dispatcher(
        store, sender, [slow], clock=lambda: NOW, monotonic=lambda: mono[0], lease_s=30
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        async with asyncio.timeout(10):
            while not dispatcher._pace["slow"].ahead:
                await asyncio.sleep(0.01)
            held = dispatcher._pace["slow"].ahead_ids()
            assert len(held) == 4  # one slot busy, four rounds of it claimed ahead
            mono[0] += 16  # past half of the 30 s lease
            sender.gate.set()
            while await _states(store, "slow") != [("delivered", 1)] * 6:
                await asyncio.sleep(0.01)
    finally:
        await dispatcher.stop(1)
        await asyncio.wait_for(task, 5)
    assert set(held) <= set(store.released)
    assert sorted(sender.sent) == [f"k{i}" for i in range(6)]


async def test_attempts_that_finish_together_are_recorded_in_one_call(store):
    """Sends do not wait for their record: what finished while a record was being written
    is written with the next one, every attempt once."""
    sender = Sender(httpx.AsyncClient(transport=httpx.MockTransport(Recording())))
    await _commit(store, [f"k{i}" for i in range(64)], ["hooks"])
    dispatcher = _dispatcher(store, sender, [_listener("hooks", max_in_flight=16)])
    await _run_until(dispatcher, store, "hooks", lambda s: s == [("delivered", 1)] * 64)
    assert sum(store.batches) == 64
    assert max(store.batches) > 1
    assert len(store.batches) < 64


async def test_a_record_that_fails_for_a_while_is_written_when_it_can_be(
    store, monkeypatch, caplog
):
    """A locked database: the record is tried again after a pause and then written; nothing is
    sent twice and no error is counted."""
    monkeypatch.setattr("bridge.delivery_record.RETRY_PAUSES_S", (0.01, 0.01))
    caplog.set_level(logging.WARNING, logger="pollbridge.deliver")
    store.fail = 2
    transport = Recording()
    sender = Sender(httpx.AsyncClient(transport=httpx.MockTransport(transport)))
    await _commit(store, ["a"], ["hooks"])
    dispatcher = _dispatcher(store, sender, [_listener("hooks")])
    await _run_until(dispatcher, store, "hooks", lambda s: s == [("delivered", 1)])
    assert transport.hosts == ["hooks"]
    assert store.batches == [1, 1, 1]
    assert dispatcher.internal_errors == 0
    assert "database is locked; retrying" in caplog.text


async def test_a_record_that_cannot_be_written_leaves_the_delivery_pending_to_send_again(
    store, monkeypatch, caplog
):
    """Every try failed: the error is logged and counted, the listener backs off, and the
    delivery, still pending, is sent again afterwards (at least once, never lost)."""
    monkeypatch.setattr("bridge.delivery_record.RETRY_PAUSES_S", (0.01,))
    monkeypatch.setattr("bridge.delivery_pace.INTERNAL_BACKOFF_S", (0.05,))
    store.fail = 2
    transport = Recording()
    sender = Sender(httpx.AsyncClient(transport=httpx.MockTransport(transport)))
    await _commit(store, ["a"], ["hooks"])
    components: list[str] = []
    dispatcher = Dispatcher(
        store, sender, [_listener("hooks")], clock=lambda: NOW, on_internal_error=components.append
    )
    await _run_until(dispatcher, store, "hooks", lambda s: s == [("delivered", 1)])
    assert transport.hosts == ["hooks", "hooks"]
    assert dispatcher.internal_errors == 1
    assert components == ["sender"]
    assert "recording its attempt failed; it stays pending" in caplog.text


async def test_stopping_waits_for_the_records_of_what_was_sent(store):
    """``stop`` lets the records of attempts already sent finish within its grace."""
    store.slow_s = 0.2
    sender = Sender(httpx.AsyncClient(transport=httpx.MockTransport(Recording())))
    await _commit(store, [f"k{i}" for i in range(4)], ["hooks"])
    dispatcher = _dispatcher(store, sender, [_listener("hooks")])
    task = asyncio.create_task(dispatcher.run())
    async with asyncio.timeout(10):
        while not store.batches:
            await asyncio.sleep(0.005)
    await dispatcher.stop(5)
    await asyncio.wait_for(task, 5)
    assert dispatcher.inflight_count() == 0
    states = await _states(store, "hooks")
    assert states == [("delivered", 1)] * 4
