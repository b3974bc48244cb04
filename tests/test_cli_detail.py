"""``pollbridge check`` and ``poll`` for a detail source and a GraphQL source."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.configs import source, write_config
from tests.support.daemon import run_cli
from tests.support.fake_graphql import FakeDetailAPI
from tests.support.servers import serve


def _config(tmp_path: Path, base: str) -> Path:
    orders = source(
        "orders",
        f"{base}/orders",
        every="1m",
        items="$.orders[*]",
        detail={"url": base + "/orders/{id}", "items": "$.order", "concurrency": 2},
    )
    issues = source(
        "issues",
        f"{base}/graphql",
        every="1m",
        items="$.data.issues.nodes[*]",
        graphql={
            "query": "query($after: String) { issues(after: $after) { nodes { id } } }",
            "variables": {"first": 10},
        },
        paginate={
            "kind": "cursor",
            "cursor": "$.data.issues.pageInfo.endCursor",
            "has_more": "$.data.issues.pageInfo.hasNextPage",
            "body_param": "variables.after",
        },
    )
    return write_config(tmp_path / "pollbridge.toml", orders, issues, shutdown_grace=None)


def test_poll_says_how_many_detail_requests_it_made(tmp_path):
    """A dry run fetches details (and says how many) but records nothing; unchanged: none."""
    api = FakeDetailAPI(count=3)
    with serve(api) as server:
        config = _config(tmp_path, server.url("").rstrip("/"))
        dry = run_cli("poll", "orders", "--config", str(config))
        committed = run_cli("poll", "orders", "--commit", "--config", str(config))
        with api.lock:
            api.orders[2] = {**api.orders[2], "updated_at": "2024-07-01T00:00:00Z", "total": 1}
        changed = run_cli("poll", "orders", "--config", str(config))
        again = run_cli("poll", "orders", "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert "orders: 3 detail request(s), one per new or changed list entry" in dry.stderr
    assert committed.returncode == 0 and "3 detail request(s)" in committed.stderr
    assert "orders: 1 detail request(s)" in changed.stderr
    lines = [json.loads(line) for line in changed.stdout.splitlines()]
    assert [(x["type"], x["key"]) for x in lines] == [("item.updated", "2")]
    assert lines[0]["after"]["total"] == 1
    # the dry run recorded nothing: the same change is still there to find
    assert "orders: 1 detail request(s)" in again.stderr
    assert api.detail_requests == {1: 2, 2: 4, 3: 2}


def test_check_summarises_detail_and_graphql(tmp_path):
    """check shows the GraphQL request, the body cursor and the detail URL with its limit."""
    config = _config(tmp_path, "https://api.example.com")
    res = run_cli("check", "--config", str(config))
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "issues: POST https://api.example.com/graphql" in out
    assert "paginate: cursor (in body variables.after)" in out
    assert (
        "detail: GET https://api.example.com/orders/{id} per new or changed entry, items "
        "$.order, at most 2 at once" in out
    )
    doc = json.loads(run_cli("check", "--json", "--config", str(config)).stdout)
    by_name = {s["name"]: s for s in doc["sources"]}
    assert by_name["orders"]["detail"]["concurrency"] == 2
    assert by_name["issues"]["graphql"] == {"variables": ["first"]}
