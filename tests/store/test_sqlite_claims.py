"""A SQLite claim is on disk before the send starts: a restarted daemon knows what may have left."""

from __future__ import annotations

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
