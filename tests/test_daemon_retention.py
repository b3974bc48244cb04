"""Retention: the daemon's daily job prunes by ``[bridge] retention`` and never on "off"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.daemon import Daemon
from bridge.models import AttemptResult, Change
from bridge.store import DeliveryQuery, EventQuery, PollCommit
from bridge.store.sqlite import SQLiteStore
from tests.support.configs import idle_source
from tests.support.pipelines import make_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def _history(store: SQLiteStore) -> None:
    change = Change("created", "1", "1", None, {"id": 1}, [], "h")
    await store.commit_poll(
        PollCommit("s", T0, 0.0, [], [], [change], [["hooks"]], 1, "f", expected_version=0)
    )
    (d,) = await store.list_deliveries(DeliveryQuery())
    await store.record_attempt(d.id, T0, AttemptResult(True, 204, 0.0), next_at=None)


@pytest.mark.parametrize(("retention", "kept"), [("14d", 0), ("30d", 1), ("off", 1)])
async def test_prune_history_follows_retention(tmp_path, retention, kept):
    """A delivered event 15 days old is pruned with 14d, kept with 30d or off."""
    config = make_config(tmp_path, idle_source(), state=tmp_path / "s.db", retention=retention)
    store = SQLiteStore(config.state_location)
    await store.open()
    try:
        await _history(store)
        daemon = Daemon(config, store=store, clock=lambda: T0 + timedelta(days=15))
        await daemon.prune_history()
        assert len(await store.list_events(EventQuery())) == kept
    finally:
        await store.close()
