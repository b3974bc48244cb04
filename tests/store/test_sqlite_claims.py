"""A SQLite claim is on disk before the send starts: a restarted daemon knows what may have left."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path

from bridge.core.coalesce import merged_changes
from bridge.store.sqlite import SQLiteStore
from tests.store.test_contract import T0, _updates


async def test_a_claim_survives_the_process_and_keeps_its_delivery_out_of_coalescing(
    tmp_path: Path,
):
    """Claim a head, lose the process before the attempt is recorded, reopen: the head is
    still sent as it was, only the updates behind it are merged."""
    path = tmp_path / "state.db"
    later = (T0 + timedelta(days=1)).timestamp()
    first = SQLiteStore(path)
    await first.open()
    await _updates(first, "1", "abcd")
    (head,) = await first.claim_deliveries("hooks", later, 1, [], owner="me", claim_s=30)
    await first.close()  # nothing recorded: as after a kill mid-send
    restarted = SQLiteStore(path)
    await restarted.open()
    try:
        assert await restarted.coalesce_pending("hooks", T0, [], merged_changes) == 1
        (again,) = await restarted.due_deliveries("hooks", later, 10, [])
        assert (again.id, again.event) == (head.id, head.event)
    finally:
        await restarted.close()


async def test_a_claim_is_handed_back_before_the_calls_queued_ahead_of_it(tmp_path: Path):
    """A claim goes ahead of the store calls already waiting for the thread and comes back
    as soon as it is done: the dispatcher's slots do not wait for a batch of attempts."""
    store = SQLiteStore(tmp_path / "state.db")
    await store.open()
    try:
        later = (T0 + timedelta(days=1)).timestamp()
        await _updates(store, "1", "ab")
        running, go_on, claimed = threading.Event(), threading.Event(), threading.Event()

        def busy() -> None:
            running.set()
            go_on.wait(10)

        def queued() -> bool:
            return claimed.wait(10)  # True only if the claim came back while this waits

        first = asyncio.ensure_future(store._run(busy))
        await asyncio.to_thread(running.wait, 10)
        behind = asyncio.ensure_future(store._run(queued))
        claim = asyncio.ensure_future(
            store.claim_deliveries("hooks", later, 1, [], owner="me", claim_s=30)
        )
        await asyncio.sleep(0)
        go_on.set()
        (head,) = await asyncio.wait_for(claim, 10)
        claimed.set()
        assert head.event.key == "1"
        assert await asyncio.wait_for(behind, 10) is True
        await first
    finally:
        await store.close()
