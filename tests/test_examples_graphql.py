"""The GraphQL and detail-fetch examples in config/examples/ poll local fakes of their APIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import iter_summary, load_config
from bridge.core.signing import generate_secret
from tests.support.fake_graphql import FakeDetailAPI, FakeGraphQL
from tests.support.pipelines import running
from tests.support.servers import serve

EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "examples"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"STATE_DIRECTORY": str(tmp_path), "WEBHOOK_SECRET": generate_secret(), **extra}


async def test_github_graphql_example(tmp_path):
    """pageInfo paging with the cursor in variables.after; a rename is one update."""
    fake = FakeGraphQL(count=250)
    with serve(fake) as server:
        env = _env(tmp_path, GITHUB_GRAPHQL=server.url("/graphql"), GITHUB_TOKEN="ghp_test_1")
        config = load_config(EXAMPLES / "github-graphql.toml", env)
        assert "ghp_test_1" not in "\n".join(iter_summary(config))
        async with running(config) as h:
            first = await h.poll()
            assert (first.result, first.item_count, first.pages) == ("baseline", 250, 3), (
                first.error
            )
            with fake.lock:
                fake.nodes[7]["title"] = "renamed"
            changed = await h.poll()
    assert [(c.type, c.key_text) for c in changed.changes] == [("updated", "I_8")]
    assert changed.changes[0].changes == [{"op": "replace", "path": "/title", "value": "renamed"}]
    first_request = server.requests[0]
    assert first_request.method == "POST"
    assert first_request.headers["authorization"] == "Bearer ghp_test_1"
    assert first_request.headers["content-type"].startswith("application/json")
    afters = [b["variables"].get("after") for b in fake.bodies[:3]]
    assert afters[0] is None and afters[1] and afters[2] and afters[1] != afters[2]
    assert all(b["variables"]["owner"] == "octocat" for b in fake.bodies)
    assert all("pageInfo" in b["query"] for b in fake.bodies)


async def test_shopify_example(tmp_path):
    """edges/node connections: nodes are the items; an empty connection is an empty list."""
    fake = FakeGraphQL(count=120)
    with serve(fake) as server:
        env = _env(
            tmp_path,
            SHOPIFY_API=server.url("").rstrip("/"),
            SHOPIFY_ACCESS_TOKEN="shpat_test_1",
        )
        config = load_config(EXAMPLES / "shopify.toml", env)
        async with running(config) as h:
            first = await h.poll()
            assert (first.result, first.item_count, first.pages) == ("baseline", 120, 3), (
                first.error
            )
            with fake.lock:
                del fake.nodes[0]
            changed = await h.poll()
            with fake.lock:
                fake.nodes = []
            emptied = await h.poll()
    assert [(c.type, c.key_text) for c in changed.changes] == [("deleted", "I_1")]
    # 119 deletions exceed max_deletes = 20: held, which proves the empty page was read as a list
    assert emptied.result == "held", emptied.error
    assert server.requests[0].path == "/admin/api/2024-01/graphql.json"
    assert server.requests[0].headers["x-shopify-access-token"] == "shpat_test_1"
    assert [b["variables"].get("after") is None for b in fake.bodies[:3]] == [True, False, False]


async def test_graphql_errors_fail_the_poll(tmp_path):
    """A 200 with an errors array fails the poll, quoting the first message and its path."""
    fake = FakeGraphQL(count=30)
    with serve(fake) as server:
        env = _env(tmp_path, GITHUB_GRAPHQL=server.url("/graphql"), GITHUB_TOKEN="ghp_test_1")
        config = load_config(EXAMPLES / "github-graphql.toml", env)
        async with running(config) as h:
            first = await h.poll()
            with fake.lock:
                fake.nodes[0]["title"] = "changed while failing"
                fake.errors = [
                    {"message": "Could not resolve to a Repository", "path": ["repository"]},
                    {"message": "second"},
                ]
            failed = await h.poll()
            with fake.lock:
                fake.errors = None
            recovered = await h.poll()
            state = await h.store.get_source_state("github-issues-graphql")
    assert first.result == "baseline", first.error
    assert not failed.ok and failed.result == "error"
    assert "Could not resolve to a Repository" in (failed.error or "")
    assert "at path repository" in (failed.error or "")
    assert "1 more error" in (failed.error or "")
    assert failed.changes == [] and not failed.committed
    # nothing of the failed poll was recorded: the change is found by the next poll
    assert [(c.type, c.key_text) for c in recovered.changes] == [("updated", "I_1")]
    assert state is not None and state.consecutive_failures == 0


async def test_orders_detail_example(tmp_path):
    """Summaries in the list, the order from its detail URL; only changed entries are asked."""
    fake = FakeDetailAPI(count=6)
    with serve(fake) as server:
        env = _env(tmp_path, ORDERS_API=server.url("").rstrip("/"), ORDERS_TOKEN="tok-orders-1")
        config = load_config(EXAMPLES / "orders-detail.toml", env)
        async with running(config) as h:
            first = await h.poll()
            with fake.lock:
                fake.orders[5] = {
                    **fake.orders[5],
                    "updated_at": "2024-08-01T00:00:00Z",
                    "total": 1,
                }
            changed = await h.poll()
    assert (first.result, first.item_count, first.detail_fetches) == ("baseline", 6, 6), first.error
    assert changed.detail_fetches == 1
    assert [(c.type, c.key_text) for c in changed.changes] == [("updated", "5")]
    assert changed.changes[0].after["total"] == 1
    assert fake.detail_requests == {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 1}
    details = [r for r in server.requests if r.path.startswith("/orders/")]
    assert all(r.headers["authorization"] == "Bearer tok-orders-1" for r in details)


@pytest.mark.parametrize("name", ["github-graphql", "shopify", "orders-detail"])
def test_graphql_examples_need_their_secrets(tmp_path, name):
    """Without the token variables these examples refuse to load, naming the variable."""
    with pytest.raises(Exception, match=r"(is|are) not set in the environment"):
        load_config(EXAMPLES / f"{name}.toml", {"STATE_DIRECTORY": str(tmp_path)})
