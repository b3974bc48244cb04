"""LeaseKeeper: which sources an instance polls, balanced through the store's leases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.leases import LeaseKeeper, this_instance
from bridge.store import InstanceInfo, Store
from bridge.store.postgres import PostgresStore
from bridge.store.sqlite import SQLiteStore

SOURCES = ["a", "b", "c", "d"]
T0 = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
async def pg_stores(pg_url: str) -> AsyncIterator[list[Store]]:
    """Three PostgreSQL stores on one schema, one per simulated instance."""
    stores: list[Store] = [PostgresStore(pg_url, max_connections=3) for _ in range(3)]
    for s in stores:
        await s.open()
    yield stores
    for s in stores:
        await s.close()


def keeper(store: Store, name: str, lease_s: float = 30) -> LeaseKeeper:
    return LeaseKeeper(store, InstanceInfo(name, "host", 1, T0), SOURCES, lease_s)


async def tokens(k: LeaseKeeper) -> dict[str, int | None]:
    return {s: await k.acquire(s) for s in SOURCES}


def test_instance_ids_are_unique_per_process_start():
    """Two identities made in one process differ (a restarted pid must not inherit leases)."""
    a, b = this_instance(), this_instance()
    assert a.id != b.id and a.pid == b.pid


async def test_a_lone_sqlite_instance_polls_everything(tmp_path: Path):
    """With SQLite every source is ours at once, as before leases existed."""
    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    try:
        k = keeper(store, "solo")
        await k.beat()
        assert all(t is not None for t in (await tokens(k)).values())
        await k.beat()
        assert k.held == frozenset(SOURCES)
    finally:
        await store.close()


async def test_a_lone_sqlite_instance_does_not_announce_its_leases(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """SQLite grants every lease, so taking one is logged at debug, not once per source at info."""
    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    try:
        with caplog.at_level("DEBUG", logger="pollbridge.leases"):
            await tokens(keeper(store, "solo"))
    finally:
        await store.close()
    took = [r for r in caplog.records if r.getMessage().startswith("took the lease")]
    assert len(took) == len(SOURCES)
    assert {r.levelname for r in took} == {"DEBUG"}


@pytest.mark.postgres
async def test_a_second_instance_gets_half_of_the_sources(pg_stores):
    """The first instance lets go of its surplus; the newcomer takes it; nobody polls twice."""
    first, second = keeper(pg_stores[0], "first"), keeper(pg_stores[1], "second")
    await first.beat()
    assert all(t is not None for t in (await tokens(first)).values())
    await second.beat()
    assert all(t is None for t in (await tokens(second)).values())
    await first.beat()  # sees two live instances: keeps its share of 2
    assert len(first.held) == 2
    got = await tokens(second)
    assert {s for s, t in got.items() if t is not None} == set(SOURCES) - first.held
    # the released sources are not taken back by the first instance while it cools down
    assert {s for s, t in (await tokens(first)).items() if t is not None} == first.held


@pytest.mark.postgres
async def test_a_busy_source_is_not_given_away(pg_stores):
    """Rebalancing never releases a source whose poll is running."""
    first, second = keeper(pg_stores[0], "first"), keeper(pg_stores[1], "second")
    await first.beat()
    await tokens(first)
    await second.beat()
    async with first.polling("d") as token:
        assert token is not None
        await first.beat()
        assert "d" in first.held
    assert len(first.held) == 2


@pytest.mark.postgres
async def test_a_dead_instances_sources_are_taken_even_at_full_share(pg_stores):
    """An instance at its share still takes a source whose owner stopped renewing."""
    dead, alive = keeper(pg_stores[0], "dead", lease_s=1), keeper(pg_stores[1], "alive", 1)
    await dead.beat()
    await tokens(dead)
    await alive.beat()
    await dead.beat()  # two live: dead keeps 2
    await tokens(alive)
    assert (len(alive.held), len(dead.held)) == (2, 2)
    await asyncio.sleep(1.1)  # `dead` stops heartbeating; its leases and heartbeat expire
    taken = await tokens(alive)
    assert all(t is not None for t in taken.values())
    assert alive.held == frozenset(SOURCES)


async def test_an_unreachable_store_skips_the_tick(caplog):
    """When the store cannot be asked, the poll is skipped with a warning, not a traceback."""
    unopened = PostgresStore("postgresql://nobody@127.0.0.1:1/none")
    k = keeper(unopened, "me")
    async with k.polling("a") as token:
        assert token is None
    assert "poll a skipped" in caplog.text
    assert k.held == frozenset()
