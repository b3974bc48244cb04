"""Routing at commit: filtered-out events get no delivery row, also for large polls."""

from __future__ import annotations

from tests.support.pipelines import make_config, running
from tests.support.servers import ItemsAPI, serve


async def test_many_changes_are_routed_with_match_and_on_fields(tmp_path):
    """A poll with many changes routes each one through every filter (match runs off the loop)."""
    api = ItemsAPI()
    api.set(*({"id": i, "total": i * 10, "status": "open"} for i in range(60)))
    with serve(api) as server:
        config = make_config(
            tmp_path,
            f"""
[[sources]]
name = "orders"
url = "{server.url("/orders")}"
every = "1m"
items = "$.data[*]"

[[listeners]]
name = "big"
url = "https://hooks.example.com/big"
match = "$.data.after[?(@.total >= 300)]"

[[listeners]]
name = "status"
url = "https://hooks.example.com/status"
on_fields = ["/status"]
events = ["updated"]
""",
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
            rows = h.store.conn.execute(
                "SELECT d.listener, COUNT(*) FROM deliveries d GROUP BY d.listener"
            ).fetchall()
    assert dict(rows) == {"big": 30, "status": 30}
