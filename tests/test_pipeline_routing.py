"""Routing at commit: filtered-out events get no delivery row, also for large polls."""

from __future__ import annotations

from collections import Counter

from bridge.store import DeliveryQuery
from tests.support.configs import listener, source
from tests.support.pipelines import make_config, running
from tests.support.servers import ItemsAPI, serve
from tests.support.state import EVERYTHING


async def test_many_changes_are_routed_with_match_and_on_fields(tmp_path):
    """A poll with many changes routes each one through every filter (match runs off the loop)."""
    api = ItemsAPI()
    api.set(*({"id": i, "total": i * 10, "status": "open"} for i in range(60)))
    with serve(api) as server:
        config = make_config(
            tmp_path,
            source("orders", server.url("/orders"), every="1m"),
            listener(
                "big", "https://hooks.example.com/big", match="$.data.after[?(@.total >= 300)]"
            ),
            listener(
                "status",
                "https://hooks.example.com/status",
                on_fields=["/status"],
                events=["updated"],
            ),
        )
        async with running(config) as h:
            assert (await h.poll()).result == "baseline"
            api.set(
                *(
                    {"id": i, "total": i * 10 + 1, "status": "paid" if i % 2 else "open"}
                    for i in range(60)
                )
            )
            outcome = await h.poll()
            assert len(outcome.changes) == 60
            deliveries = await h.store.list_deliveries(DeliveryQuery(limit=EVERYTHING))
    assert Counter(d.listener for d in deliveries) == {"big": 30, "status": 30}
