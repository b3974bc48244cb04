"""Three ``pollbridge run`` processes on one PostgreSQL database; one is killed with SIGKILL."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bridge.core.extract import key_text
from bridge.errors import NoStateError, StoreError
from bridge.models import Event
from bridge.store import (
    EventQuery,
    InstanceStatus,
    LeaseInfo,
    OwnersReport,
    Store,
    open_store,
)
from tests.support import configs
from tests.support.configs import listener, write_config
from tests.support.daemon import DaemonProcess, run_cli
from tests.support.servers import Reply, Request, TestServer, serve

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(180)]

T = TypeVar("T")
SOURCES = [f"s{i}" for i in range(6)]
LEASE_S = 2.0


class ChangingAPI:
    """Six list endpoints whose items change in a background thread; records who polled."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.items: dict[str, dict[int, dict[str, Any]]] = {
            s: {i: {"id": i, "v": 0} for i in range(5)} for s in SOURCES
        }
        self.polls: list[tuple[str, str]] = []
        """(source, instance label) in arrival order."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.next_id = 100

    def __call__(self, req: Request) -> Reply:
        source = req.path.strip("/")
        with self.lock:
            self.polls.append((source, req.headers.get("x-instance", "?")))
            return Reply(200, {"data": list(self.items.get(source, {}).values())})

    def mutate_once(self) -> None:
        with self.lock:
            items = self.items[self.rng.choice(SOURCES)]
            roll = self.rng.random()
            if roll < 0.1 and len(items) > 2:
                del items[self.rng.choice(list(items))]
            elif roll < 0.2:
                self.next_id += 1
                items[self.next_id] = {"id": self.next_id, "v": 0}
            else:
                key = self.rng.choice(list(items))
                items[key] = {"id": key, "v": items[key]["v"] + 1}

    def start(self, every_s: float = 0.03) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                self.mutate_once()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {s: {str(k): dict(v) for k, v in its.items()} for s, its in self.items.items()}


@pytest.fixture
def changing_api() -> Iterator[tuple[ChangingAPI, TestServer]]:
    api = ChangingAPI()
    with serve(api) as server:
        yield api, server
    api.stop()


def _config(
    tmp_path: Path, state: str, api: TestServer, hooks: TestServer, lease: str = f"{LEASE_S:g}s"
) -> Path:
    sources = [
        configs.source(s, api.url("/" + s), headers={"x-instance": "${PB_INSTANCE}"})
        for s in SOURCES
    ]
    hook = listener(
        "hooks",
        hooks.url("/hooks"),
        retry=["100ms", "200ms", "500ms", "1s", "1s", "1s", "1s", "1s"],
        max_in_flight=4,
        timeout="1s",
    )
    return write_config(
        tmp_path / "pollbridge.toml",
        *sources,
        hook,
        state=state,
        lease=lease,
        shutdown_grace="5s",
    )


class State:
    """Looks into the shared state through the store interface, read-only, as ``pollbridge
    leases``/``status``/``events`` do: a store on this (synchronous) test's own event loop."""

    def __init__(self, url: str):
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.store: Store | None = None

    def close(self) -> None:
        if self.store is not None:
            self.loop.run_until_complete(self.store.close())
        self.loop.close()

    def ask(self, question: Callable[[Store], Awaitable[T]]) -> T | None:
        """The answer, or None while no instance has created the schema yet."""
        if self.store is None:
            store = open_store(self.url, access="read")
            try:
                self.loop.run_until_complete(store.open())
            except (NoStateError, StoreError):
                return None
            self.store = store
        return self.loop.run_until_complete(question(self.store))

    def owners(self) -> OwnersReport:
        return self.ask(lambda s: s.list_owners()) or OwnersReport([], [], [])

    def live_instances(self) -> list[InstanceStatus]:
        return [i for i in self.owners().instances if i.alive]

    def baselined(self) -> int:
        sources = self.ask(lambda s: s.list_source_states()) or []
        return sum(1 for st in sources if st.fingerprint is not None)

    def live_leases(self) -> list[LeaseInfo]:
        now = datetime.now(UTC)
        return [lease for lease in self.owners().leases if lease.expires_at > now]

    def items(self) -> dict[str, dict[str, Any]]:
        async def read(store: Store) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for source in SOURCES:
                keys = list((await store.load_hashes(source)).hashes)
                loaded = await store.load_items(source, keys)
                out[source] = {k: value for k, (_key, value) in loaded.items()}
            return out

        return self.ask(read) or {}

    def undelivered(self) -> int:
        async def count(store: Store) -> int:
            dead = sum(st.dead for st in await store.list_listener_states())
            return await store.pending_count() + dead

        answer = self.ask(count)
        return -1 if answer is None else answer

    def delivered(self) -> int:
        return sum(st.delivered for st in self.ask(lambda s: s.list_listener_states()) or [])

    def events(self) -> list[Event]:
        records = self.ask(lambda s: s.list_events(EventQuery(limit=1_000_000))) or []
        return sorted((r.event for r in records), key=lambda e: e.seq)

    def wait_for(self, what: str, check: Callable[[], bool], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)


def _owner_switches(polls: list[tuple[str, str]]) -> dict[str, int]:
    last: dict[str, str] = {}
    switches: dict[str, int] = defaultdict(int)
    for source, who in polls:
        if source in last and last[source] != who:
            switches[source] += 1
        last[source] = who
    return {s: switches[s] for s in SOURCES}


def test_three_instances_share_the_work_and_survive_a_kill(
    tmp_path, pg_url, changing_api, receiver
):
    """No event lost or committed twice, per-key order kept, a killed instance's work taken over."""
    api, api_server = changing_api
    # slow enough that the victim is likely to die with deliveries in flight
    receiver.handler = lambda _r: Reply(204, delay_s=0.4)
    config = _config(tmp_path, pg_url, api_server, receiver)
    daemons = [DaemonProcess(config, env={"PB_INSTANCE": f"d{i}"}) for i in range(3)]
    state = State(pg_url)
    try:
        state.wait_for("every source's baseline", lambda: state.baselined() == len(SOURCES))
        state.wait_for("three live instances", lambda: len(state.live_instances()) == 3)
        api.start()
        time.sleep(3)

        owned = {i.pid: len(i.sources) for i in state.live_instances()}
        victim = max(daemons, key=lambda d: owned.get(d.proc.pid, 0))
        assert owned.get(victim.proc.pid, 0) > 0, f"no instance owns a source: {owned}"
        before = {i.pid: i for i in state.owners().instances}[victim.proc.pid]
        victim.kill()
        killed_at = datetime.now(UTC)
        victim_id = before.id
        orphaned = {
            lease.source: lease.expires_at
            for lease in state.owners().leases
            if lease.owner == victim_id
        }
        assert orphaned, "the victim held no lease when killed"
        victim_claims = {i.id: i for i in state.owners().instances}[victim_id].claimed_deliveries
        taken_at: dict[str, datetime] = {}

        def all_taken() -> bool:
            for lease in state.owners().leases:
                if (
                    lease.source in orphaned
                    and lease.owner not in (None, victim_id)
                    and lease.source not in taken_at
                ):
                    taken_at[lease.source] = lease.acquired_at
            return len(taken_at) == len(orphaned)

        state.wait_for("the victim's sources to be taken over", all_taken, LEASE_S * 5)
        time.sleep(2)
        api.stop()
        final = api.snapshot()

        def caught_up() -> bool:
            stored = state.items()
            return state.undelivered() == 0 and all(stored.get(s) == final[s] for s in SOURCES)

        state.wait_for("the snapshots to match the API and every delivery to land", caught_up, 60)
        survivors = [d for d in daemons if d is not victim]
        codes = [d.terminate() for d in survivors]
        assert codes == [0, 0], "\n".join(d.output() for d in survivors)
        events = state.events()
    finally:
        api.stop()
        for d in daemons:
            d.__exit__(None, None, None)
        state.close()
    assert len(events) > 50, "the API changed too little for the test to mean much"

    # no loss: every committed event reached the receiver
    received = [(r.headers["webhook-id"], r.json()) for r in receiver.requests]
    assert {e.id for e in events} <= {wid for wid, _ in received}

    # the only duplicates are the attempts the victim had in flight (same webhook-id)
    assert len(received) - len({wid for wid, _ in received}) <= victim_claims

    # no double poll commit: per key, each event continues from the previous one
    last_after: dict[tuple[str, str], Any] = {}
    for e in events:
        where = (e.source, key_text(e.key))
        if where in last_after:
            assert e.before == last_after[where], (
                f"event {e.id} of {where[0]}/{where[1]} does not continue the previous one"
            )
        last_after[where] = e.after
        assert e.type in ("created", "updated", "deleted")

    # per-key order at the receiver (a duplicate may repeat an event, never go back)
    seq_of = {e.id: (e.seq, e.source, key_text(e.key)) for e in events}
    newest: dict[tuple[str, str], int] = {}
    for wid, _body in received:
        seq, source, key = seq_of[wid]
        assert seq >= newest.get((source, key), 0), f"{source}/{key}: {wid} arrived out of order"
        newest[(source, key)] = seq

    # the victim's sources were taken over once its lease ran out, not later
    for source, at in taken_at.items():
        late_s = (at - orphaned[source]).total_seconds()
        assert late_s <= LEASE_S, f"{source} taken over {late_s:.2f}s after its lease expired"
        assert (orphaned[source] - killed_at).total_seconds() <= LEASE_S

    # one poller per source at a time: ownership changed hands a few times, not at every tick
    switches = _owner_switches(api.polls)
    polls_per_source = len(api.polls) / len(SOURCES)
    assert max(switches.values()) <= 8, (
        f"owner switches {switches} in ~{polls_per_source:.0f} polls"
    )


def test_a_stopped_instance_hands_its_sources_over_at_once(
    tmp_path, pg_url, changing_api, receiver
):
    """On SIGTERM an instance gives its leases back: the other takes them long before expiry."""
    _api, api_server = changing_api
    # a lease far longer than the test may wait: only a clean hand-over can pass
    config = _config(tmp_path, pg_url, api_server, receiver, lease="120s")
    state = State(pg_url)
    first = DaemonProcess(config, env={"PB_INSTANCE": "first"})
    second = None
    try:
        state.wait_for(
            "the first instance to own every source",
            lambda: sum(1 for lease in state.owners().leases if lease.owner) == len(SOURCES),
        )
        second = DaemonProcess(config, env={"PB_INSTANCE": "second"})
        state.wait_for("two live instances", lambda: len(state.live_instances()) == 2)
        assert first.terminate() == 0, first.output()

        def second_owns_all() -> bool:
            owners = state.owners()
            return [len(i.sources) for i in owners.instances] == [len(SOURCES)]

        state.wait_for("the second instance to own every source", second_owns_all, 30)
        assert second.terminate() == 0, second.output()
        assert state.live_leases() == []
        assert state.owners().instances == []
    finally:
        for d in (first, second):
            if d is not None:
                d.__exit__(None, None, None)
        state.close()


def test_run_once_on_postgres_polls_delivers_and_leaves(tmp_path, pg_url, changing_api, receiver):
    """``run --once`` works on PostgreSQL too and leaves no lease or claim behind."""
    api, api_server = changing_api
    config = _config(tmp_path, pg_url, api_server, receiver)
    first = run_cli("run", "--once", "--config", str(config), env={"PB_INSTANCE": "once"})
    assert first.returncode == 0, first.stderr
    for _ in range(3):
        api.mutate_once()
    second = run_cli("run", "--once", "--config", str(config), env={"PB_INSTANCE": "once"})
    assert second.returncode == 0, second.stderr
    state = State(pg_url)
    try:
        events = len(state.events())
        assert events >= 1
        assert state.delivered() == events
        assert state.undelivered() == 0
        assert len(receiver.requests) == events
        # left: no live lease, no instance (so no claim held by one)
        assert state.live_leases() == []
        assert state.owners().instances == []
    finally:
        state.close()
