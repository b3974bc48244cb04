"""What only the shared PostgreSQL store does: schemas, migrations, leases, fencing, claims, NOTIFY."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bridge.errors import NoStateError, StoreError
from bridge.models import AttemptResult
from bridge.store import InstanceInfo, LeaseLost, PollCommit, StaleSnapshot
from bridge.store.postgres import SCHEMA_VERSION, PostgresStore, redact_url, schema_of
from tests.store.test_contract import created, item, updated

pytestmark = pytest.mark.postgres

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
OK = AttemptResult(True, 204, 0.01)
FAILED = AttemptResult(False, 503, 0.01, error="HTTP 503")

StoreFactory = Callable[[], Coroutine[Any, Any, PostgresStore]]


@pytest.fixture
async def open_store(pg_url: str) -> AsyncIterator[StoreFactory]:
    """Opens as many stores on the test's schema as a test wants (think: instances)."""
    opened: list[PostgresStore] = []

    async def factory() -> PostgresStore:
        store = PostgresStore(pg_url, max_connections=4)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


def poll(
    source: str, *its: Any, token: int | None = None, expected: int | None = None
) -> PollCommit:
    return PollCommit(
        source=source,
        polled_at=T0,
        duration_s=0.01,
        upserts=list(its),
        deletes=[],
        changes=[created(i) for i in its],
        routes=[["hooks"] for _ in its],
        item_count=len(its),
        fingerprint="fp",
        expected_version=expected,
        lease_token=token,
    )


def test_schema_comes_from_the_url_options():
    """The schema is the first search_path entry of the URL's options; passwords are redacted."""
    assert schema_of("postgresql://u@h/db?options=-csearch_path%3Dteam_a") == "team_a"
    assert schema_of("postgresql://u@h/db?options=-c%20search_path%3Dteam_b,public") == "team_b"
    assert schema_of("postgresql://u@h/db") is None  # the role's search_path decides
    assert redact_url("postgresql://u:s3cret@h/db") == "postgresql://u:***@h/db"
    assert "s3cret" not in redact_url("postgresql://h/db?password=s3cret&x=1")


async def test_open_creates_the_schema_and_records_its_version(open_store, pg_dsn, pg_schema):
    """Opening creates the schema and its tables once; reopening changes nothing."""
    first, second = await asyncio.gather(open_store(), open_store())
    assert await first.schema_version() == SCHEMA_VERSION
    with psycopg.connect(pg_dsn) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (pg_schema,),
            )
        }
        versions = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.schema_version").format(sql.Identifier(pg_schema))
        ).fetchone()
    assert {"sources", "items", "events", "deliveries", "source_leases", "instances"} <= tables
    assert versions == (SCHEMA_VERSION,)
    await second.close()
    third = await open_store()
    assert await third.schema_version() == SCHEMA_VERSION


async def test_unreachable_server_is_a_store_error():
    """A server that does not answer gives a StoreError naming the (redacted) location."""
    store = PostgresStore("postgresql://u:pw@127.0.0.1:1/db?connect_timeout=1")
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1") as info:
        await store.open()
    assert "pw" not in str(info.value)


async def test_a_lease_has_one_owner_until_it_expires(open_store):
    """A live lease is refused to others; once expired, the next owner gets a higher token."""
    a, b = await open_store(), await open_store()
    token_a = await a.acquire_source_lease("s", "A", 0.5)
    assert token_a is not None
    assert await b.acquire_source_lease("s", "B", 30) is None
    assert await a.acquire_source_lease("s", "A", 0.5) == token_a  # renewal keeps the token
    await asyncio.sleep(0.6)
    token_b = await b.acquire_source_lease("s", "B", 30)
    assert token_b is not None and token_b > token_a
    assert await a.acquire_source_lease("s", "A", 30) is None


async def test_a_commit_under_a_lost_lease_is_refused(open_store):
    """Fencing: the old owner's commit is refused after a takeover; the new owner's succeeds."""
    a, b = await open_store(), await open_store()
    token_a = await a.acquire_source_lease("s", "A", 0.2)
    await asyncio.sleep(0.3)
    token_b = await b.acquire_source_lease("s", "B", 30)
    x = item("x", v=1)
    with pytest.raises(LeaseLost, match="now held by B"):
        await a.commit_poll(poll("s", x, token=token_a, expected=0))
    assert await a.snapshot_version("s") == 0
    assert await a.pending_count() == 0
    await b.commit_poll(poll("s", x, token=token_b, expected=0))
    assert await a.snapshot_version("s") == 1


async def test_two_first_commits_of_one_source_cannot_both_land(open_store):
    """Concurrent baseline commits of a new source: exactly one lands, the other is stale."""
    a, b = await open_store(), await open_store()
    results = await asyncio.gather(
        a.commit_poll(poll("s", item("x", v=1), expected=0)),
        b.commit_poll(poll("s", item("x", v=1), expected=0)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["StaleSnapshot", "list"]
    assert isinstance(next(r for r in results if not isinstance(r, list)), StaleSnapshot)
    assert await a.pending_count() == 1


async def test_orphans_only_takes_dead_owners_leases_not_released_ones(open_store):
    """At its share an instance takes only leases whose owner stopped renewing."""
    store = await open_store()
    await store.acquire_source_lease("released", "A", 30)
    await store.release_source_leases("A", ["released"])
    await store.acquire_source_lease("orphan", "A", 0.2)
    await asyncio.sleep(0.3)
    assert await store.acquire_source_lease("released", "B", 30, orphans_only=True) is None
    assert await store.acquire_source_lease("orphan", "B", 30, orphans_only=True) is not None
    assert await store.acquire_source_lease("released", "B", 30) is not None


async def test_heartbeat_renews_held_leases_and_counts_live_instances(open_store):
    """A heartbeat keeps our leases, drops those taken over, and counts live instances."""
    store = await open_store()
    a = InstanceInfo("A", "h1", 1, T0)
    b = InstanceInfo("B", "h2", 2, T0)
    await store.heartbeat(b, [], 30)
    token = await store.acquire_source_lease("kept", "A", 0.3)
    await store.acquire_source_lease("lost", "A", 0.3)
    beat = await store.heartbeat(a, ["kept"], 30)
    assert beat.tokens == {"kept": token}
    assert beat.live_instances == 2
    await asyncio.sleep(0.4)
    await store.acquire_source_lease("lost", "B", 30)
    beat = await store.heartbeat(a, ["kept", "lost"], 30)
    assert beat.tokens == {"kept": token}
    owners = await store.list_owners()
    assert {i.id: i.sources for i in owners.instances} == {"A": ("kept",), "B": ("lost",)}
    assert all(i.alive for i in owners.instances)
    leases = {lease.source: lease for lease in owners.leases}
    assert {s: lease.owner for s, lease in leases.items()} == {"kept": "A", "lost": "B"}
    # renewed by the heartbeat (30 s), and the taken-over one acquired after the first expired
    assert (leases["kept"].expires_at - leases["kept"].acquired_at).total_seconds() > 20
    assert leases["lost"].acquired_at >= leases["kept"].acquired_at


async def _two_keys_three_events(store: PostgresStore) -> None:
    a1, a2, b1 = item("a", v=1), item("a", v=2), item("b", v=1)
    await store.commit_poll(poll("s", a1, b1))
    await store.commit_poll(
        PollCommit(
            source="s",
            polled_at=T0,
            duration_s=0.01,
            upserts=[a2],
            deletes=[],
            changes=[updated(a1, a2)],
            routes=[["hooks"]],
            item_count=2,
            fingerprint="fp",
        )
    )


async def test_a_claimed_head_blocks_its_key_for_other_instances(open_store):
    """Another instance gets neither a claimed delivery nor the ones after it on that key."""
    a, b = await open_store(), await open_store()
    await _two_keys_three_events(a)
    now = T0.timestamp() + 1
    (head_a,) = await a.claim_deliveries("hooks", now, 1, [], owner="A", claim_s=30)
    assert head_a.event.key == "a"
    got_b = await b.claim_deliveries("hooks", now, 10, [], owner="B", claim_s=30)
    assert [d.event.key for d in got_b] == ["b"]
    assert await b.claim_deliveries("hooks", now, 10, [], owner="B", claim_s=30) == []
    await a.record_attempt(head_a.id, T0, OK, next_at=None)
    (next_a,) = await b.claim_deliveries("hooks", now, 10, [], owner="B", claim_s=30)
    assert (next_a.event.key, next_a.event.type) == ("a", "updated")
    owners = await a.list_owners()
    assert owners.instances == []  # claims alone do not register an instance


async def test_an_expired_claim_is_taken_over(open_store):
    """A claim its owner never recorded (it died) is claimed again after it expires."""
    a, b = await open_store(), await open_store()
    await a.commit_poll(poll("s", item("x", v=1)))
    now = T0.timestamp() + 1
    (first,) = await a.claim_deliveries("hooks", now, 10, [], owner="A", claim_s=0.2)
    assert await b.claim_deliveries("hooks", now, 10, [], owner="B", claim_s=30) == []
    next_at = await b.next_due_at(["hooks"], [])
    assert next_at is not None and next_at > now  # wake up when the claim runs out
    await asyncio.sleep(0.3)
    (again,) = await b.claim_deliveries("hooks", now, 10, [], owner="B", claim_s=30)
    assert again.id == first.id and again.event.id == first.event.id


async def test_a_late_recorder_does_not_revive_a_finished_delivery(open_store):
    """If two instances attempted one delivery, a late failure does not undo the success."""
    store = await open_store()
    await store.commit_poll(poll("s", item("x", v=1)))
    (d,) = await store.claim_deliveries("hooks", T0.timestamp() + 1, 1, [], owner="A", claim_s=30)
    assert await store.record_attempt(d.id, T0, OK, next_at=None) == "delivered"
    assert await store.record_attempt(d.id, T0, FAILED, next_at=9e9) == "delivered"
    (listener,) = await store.list_listener_states()
    assert (listener.delivered, listener.pending) == (1, 0)


async def test_concurrent_claims_never_hand_out_a_delivery_twice(open_store):
    """Four instances claiming at once share the deliveries without overlap or loss."""
    stores = [await open_store() for _ in range(4)]
    its = [item(f"k{i}", v=1) for i in range(200)]
    await stores[0].commit_poll(poll("s", *its))
    now = T0.timestamp() + 1
    claimed: dict[str, list[int]] = {}

    async def drain(store: PostgresStore, owner: str) -> None:
        while batch := await store.claim_deliveries("hooks", now, 7, [], owner=owner, claim_s=30):
            claimed.setdefault(owner, []).extend(d.id for d in batch)

    await asyncio.gather(*(drain(s, f"o{i}") for i, s in enumerate(stores)))
    ids = [i for batch in claimed.values() for i in batch]
    assert len(ids) == len(set(ids)) == 200


async def test_leave_gives_back_leases_and_claims(open_store):
    """A clean stop frees the instance's leases and unattempted claims at once."""
    a, b = await open_store(), await open_store()
    me = InstanceInfo("A", "h", 1, T0)
    await a.heartbeat(me, [], 30)
    await a.acquire_source_lease("s", "A", 30)
    await a.commit_poll(poll("s", item("x", v=1)))
    now = T0.timestamp() + 1
    assert len(await a.claim_deliveries("hooks", now, 10, [], owner="A", claim_s=30)) == 1
    await a.leave("A")
    # a departed owner's lease is taken even by an instance already at its share
    assert await b.acquire_source_lease("s", "B", 30, orphans_only=True) is not None
    assert len(await b.claim_deliveries("hooks", now, 10, [], owner="B", claim_s=30)) == 1
    assert [i.id for i in (await b.list_owners()).instances] == []


async def test_a_commit_wakes_other_instances(open_store):
    """LISTEN/NOTIFY: a commit that queues deliveries wakes dispatchers elsewhere."""
    a, b = await open_store(), await open_store()
    woken = asyncio.Event()
    calls = 0

    def wake() -> None:
        nonlocal calls
        calls += 1
        if calls > 1:  # the first call comes right after LISTEN, by design
            woken.set()

    watcher = asyncio.create_task(b.watch_deliveries(wake))
    try:
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.02)
        await a.commit_poll(poll("s", item("x", v=1)))
        async with asyncio.timeout(10):
            await woken.wait()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert calls >= 2


async def test_times_come_back_in_utc(open_store):
    """Stored times read back equal and in UTC whatever the session's time zone."""
    store = await open_store()
    local = T0.astimezone(timezone(timedelta(hours=5)))
    await store.record_poll_failure("s", local, 0.1, "x")
    state = await store.get_source_state("s")
    assert state is not None and state.last_poll_at == T0
    assert state.last_poll_at.utcoffset() == timedelta(0)


async def test_an_older_schema_is_migrated_and_a_newer_one_refused(open_store, pg_url):
    """Opening applies the missing numbered migrations; a schema from the future is refused."""
    store = await open_store()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # back to version 1
        conn.execute("ALTER TABLE sources DROP COLUMN accept_requested")
        conn.execute("ALTER TABLE sources DROP COLUMN cursor, DROP COLUMN reconciled_at")
        conn.execute("ALTER TABLE listeners DROP COLUMN failing_since")
        conn.execute("ALTER TABLE deliveries DROP COLUMN coalesced_into, DROP COLUMN claimed_at")
        conn.execute("DROP TABLE meta")
        conn.execute("DROP INDEX deliveries_finished, deliveries_dead")
        conn.execute("ALTER TABLE items DROP COLUMN list_hash")
        conn.execute("ALTER TABLE events DROP COLUMN type_name")
        conn.execute("DROP TABLE seen_keys, missing_items")
        conn.execute("DELETE FROM schema_version WHERE version > 1")
    await store.close()
    store = await open_store()
    assert await store.schema_version() == SCHEMA_VERSION == 8
    assert (await store.load_hashes("s", list_hashes=True)).list_hashes == {}
    await store.write_runtime({"pid": 1})
    await store.update_source_state("s", accept_requested=True)
    state = await store.get_source_state("s")
    assert state is not None and state.accept_requested
    await store.set_listener_paused("hooks", False, None, T0)
    assert [s.failing_since for s in await store.list_listener_states()] == [None]
    assert (await store.load_seen("s")).first_seen == {} and await store.tracked_counts() == {}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this pollbridge"):
        await open_store()


async def test_coalescing_leaves_another_instances_claims_alone(open_store):
    """A delivery claimed elsewhere (being sent now) is never merged into a newer one."""
    from bridge.core.coalesce import merged_changes
    from tests.store.test_contract import _updates

    a, b = await open_store(), await open_store()
    await _updates(a, "1", "abc")
    later = T0.timestamp() + 3600
    (head,) = await a.claim_deliveries("hooks", later, 1, [], owner="A", claim_s=30)
    assert await b.coalesce_pending("hooks", T0, [], merged_changes) == 0
    await a.record_attempt(head.id, T0, OK, next_at=None)
    (second,) = await b.claim_deliveries("hooks", later, 10, [], owner="B", claim_s=30)
    assert (second.event.before, second.event.after) == ({"s": "b"}, {"s": "c"})


async def test_without_a_schema_in_the_url_the_roles_search_path_decides(
    pg_dsn, pg_schema, monkeypatch
):
    """No search_path in the URL: the tables go to the current schema, which must exist."""
    monkeypatch.setenv("PGOPTIONS", f"-csearch_path={pg_schema}")
    store = PostgresStore(pg_dsn)
    with pytest.raises(StoreError, match="no schema to create the tables in"):
        await store.open()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    await store.open()
    try:
        assert (store.schema, store.channel) == (pg_schema, f"pollbridge_{pg_schema}")
        assert await store.schema_version() == SCHEMA_VERSION
    finally:
        await store.close()


async def test_cli_access_never_creates_or_migrates(pg_url, pg_dsn, pg_schema):
    """read/write access: no schema yet is NoStateError and creates nothing; read cannot write."""
    for access in ("read", "write"):
        with pytest.raises(NoStateError):
            await PostgresStore(pg_url, access=access).open()
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (pg_schema,)
        ).fetchone()
    assert row == (0,)
    daemon = PostgresStore(pg_url)
    await daemon.open()
    reader = PostgresStore(pg_url, access="read")
    await reader.open()
    try:
        await daemon.write_runtime({"pid": 1})
        assert (await reader.read_runtime() or {}).get("pid") == 1
        with pytest.raises(StoreError, match="read-only"):
            await reader.write_runtime({"pid": 2})
    finally:
        await reader.close()
        await daemon.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_version WHERE version > 1")
    with pytest.raises(StoreError, match="schema version 1"):
        await PostgresStore(pg_url, access="write").open()
