"""Each file in config/examples/ loads and polls a local API shaped like the real one."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import iter_summary, load_config
from bridge.core.signing import generate_secret
from tests.support.fake_apis import CLIENT_ID, CLIENT_SECRET, FakeAPI
from tests.support.pipelines import running
from tests.support.servers import serve

EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "examples"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"STATE_DIRECTORY": str(tmp_path), "WEBHOOK_SECRET": generate_secret(), **extra}


def test_the_real_world_examples_exist():
    """The four API-shaped examples this module runs are in config/examples/."""
    assert {"github", "stripe", "jsonapi", "oauth2"} <= {p.stem for p in EXAMPLES.glob("*.toml")}


async def test_github_example(tmp_path):
    """Link-header paging with the token and ETags: an unchanged list is all 304s."""
    fake = FakeAPI(count=250, aliases={"/repos/octocat/Hello-World/issues": "/link"})
    with serve(fake) as server:
        env = _env(tmp_path, GITHUB_API=server.url("").rstrip("/"), GITHUB_TOKEN="ghp_test_token")
        config = load_config(EXAMPLES / "github.toml", env)
        assert config.state_location == str(tmp_path / "github.db")
        assert "ghp_test_token" not in "\n".join(iter_summary(config))
        async with running(config) as h:
            first = await h.poll()
            assert (first.result, first.item_count, first.pages) == ("baseline", 250, 3), (
                first.error
            )
            unchanged = await h.poll()
            assert unchanged.not_modified
            fake.keep(set(range(1, 250)))
            changed = await h.poll()
    assert [(c.type, c.key_text) for c in changed.changes] == [("deleted", "250")]
    assert changed.events and len(changed.events) == 1
    first_request = server.requests[0]
    assert first_request.headers["authorization"] == "Bearer ghp_test_token"
    assert first_request.query == {"state": ["all"], "per_page": ["100"]}
    assert all("if-none-match" in r.headers for r in server.requests[3:6])


async def test_stripe_example(tmp_path):
    """has_more / starting_after paging walks every page; the listener skips deletions."""
    fake = FakeAPI(count=250, aliases={"/v1/customers": "/stripe"})
    with serve(fake) as server:
        env = _env(tmp_path, STRIPE_API=server.url("").rstrip("/"), STRIPE_SECRET_KEY="sk_test_1")
        config = load_config(EXAMPLES / "stripe.toml", env)
        async with running(config) as h:
            first = await h.poll()
            assert (first.result, first.item_count) == ("baseline", 250), first.error
            items = [dict(it) for it in fake.items if it["id"] != 3]
            items[0]["name"] = "renamed"
            fake.set_items(items)
            changed = await h.poll()
            pending = await h.store.pending_count(["crm"])
    assert sorted(c.type for c in changed.changes) == ["deleted", "updated"]
    assert pending == 1  # events = ["created", "updated"]: the deletion is not delivered
    cursors = [r.query.get("starting_after") for r in server.requests[:3]]
    assert cursors == [None, ["100"], ["200"]]
    assert all(r.query["limit"] == ["100"] for r in server.requests)


async def test_jsonapi_example(tmp_path):
    """links.next paging with a filter on attributes.status: drafts are not items."""
    fake = FakeAPI(count=25, aliases={"/api/articles": "/jsonapi"})
    items = [dict(it) for it in fake.items]
    for it in items[:4]:
        it["status"] = "draft"
    fake.set_items(items)
    with serve(fake) as server:
        env = _env(tmp_path, JSONAPI_BASE=server.url("").rstrip("/"), CMS_API_KEY="cms-key-1")
        config = load_config(EXAMPLES / "jsonapi.toml", env)
        async with running(config) as h:
            first = await h.poll()
            items[0]["status"] = "published"
            fake.set_items(items)
            changed = await h.poll()
    assert (first.result, first.item_count, first.pages) == ("baseline", 21, 3), first.error
    assert [(c.type, c.key_text) for c in changed.changes] == [("created", "1")]
    assert changed.changes[0].after == {
        "id": "1",
        "type": "things",
        "attributes": {"name": "item 1", "status": "published"},
    }
    assert server.requests[0].headers["x-api-key"] == "cms-key-1"


async def test_oauth2_example(tmp_path):
    """Client-credentials token, offset paging, and deletes = false."""
    fake = FakeAPI(count=25, aliases={"/v2/orders": "/offset"})
    fake.require_token = True
    with serve(fake) as server:
        env = _env(
            tmp_path,
            ORDERS_API=server.url("").rstrip("/"),
            OAUTH_TOKEN_URL=server.url("/oauth/token"),
            OAUTH_CLIENT_ID=CLIENT_ID,
            OAUTH_CLIENT_SECRET=CLIENT_SECRET,
        )
        config = load_config(EXAMPLES / "oauth2.toml", env)
        assert config.redact(CLIENT_SECRET) == "***"
        async with running(config) as h:
            first = await h.poll()
            fake.revoke_tokens()
            fake.keep(set(range(1, 25)))
            changed = await h.poll()
    assert (first.result, first.item_count, first.pages) == ("baseline", 25, 3), first.error
    assert changed.ok and changed.changes == []  # deletes = false
    assert fake.token_requests == 2
    token_request = next(r for r in server.requests if r.path == "/oauth/token")
    assert b"scope=orders%3Aread" in token_request.body


@pytest.mark.parametrize("name", ["github", "stripe", "jsonapi", "oauth2"])
def test_examples_need_their_secrets(tmp_path, name):
    """Without the secret variables an example refuses to load, naming the variable."""
    with pytest.raises(Exception, match=r"(is|are) not set in the environment"):
        load_config(EXAMPLES / f"{name}.toml", {"STATE_DIRECTORY": str(tmp_path)})
