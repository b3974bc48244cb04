"""Real-world polls against a local API: pagination, conditional requests, politeness, guards."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Config
from tests.support.configs import source
from tests.support.fake_apis import FakeAPI
from tests.support.pipelines import baselined, make_config, running
from tests.support.servers import Reply, TestServer, serve


@pytest.fixture
def api() -> Iterator[tuple[FakeAPI, TestServer]]:
    """The fake list API (25 items, pages of 10) on 127.0.0.1."""
    fake = FakeAPI()
    with serve(fake) as server:
        yield fake, server


def _config(tmp_path: Path, server: TestServer, path: str = "/items", **fields: Any) -> Config:
    """Source ``things`` at ``path`` of the fake API; ``fields``: its further keys."""
    return make_config(
        tmp_path, source("things", server.url(path), every="10s", **{"items": None, **fields})
    )


DATA = "$.data[*]"
LINK = {"kind": "link"}
PAGE = {"kind": "page", "size_param": "per_page", "size": 10}

PAGINATED: dict[str, tuple[str, dict[str, Any]]] = {
    "link": ("/link", {"params": {"per_page": 10}, "paginate": LINK}),
    "next_url": (
        "/jsonapi",
        {"items": DATA, "paginate": {"kind": "next_url", "next": "$.links.next"}},
    ),
    "cursor": (
        "/cursor",
        {"items": "$.items[*]", "paginate": {"kind": "cursor", "cursor": "$.next_cursor"}},
    ),
    "stripe": (
        "/stripe",
        {
            "items": DATA,
            "params": {"limit": 10},
            "paginate": {
                "kind": "cursor",
                "cursor_from_last_item": "$.id",
                "has_more": "$.has_more",
                "param": "starting_after",
            },
        },
    ),
    "page": ("/page", {"paginate": PAGE}),
    "offset": ("/offset", {"items": "$.results[*]", "paginate": {"kind": "offset", "size": 10}}),
}


@pytest.mark.parametrize("kind", sorted(PAGINATED))
async def test_every_pagination_kind_collects_the_whole_list(tmp_path, api, kind):
    """Each paginate kind walks all 3 pages of 25 items, and the next poll sees each change."""
    fake, server = api
    path, fields = PAGINATED[kind]
    config = _config(tmp_path, server, path, **fields)
    async with running(config) as h:
        first = await h.poll()
        assert (first.ok, first.result, first.item_count) == (True, "baseline", 25), first.error
        assert len(server.requests) == 3
        fake.set_items(
            [
                {"id": i, "name": f"item {i}", "status": "open"}
                for i in range(2, 27)
                if i not in (13, 15)
            ]
            + [{"id": 15, "name": "item 15", "status": "paid"}]
        )
        second = await h.poll()
        assert second.ok, second.error
        got = sorted((c.type, c.key_text) for c in second.changes)
        assert got == [("created", "26"), ("deleted", "1"), ("deleted", "13"), ("updated", "15")]


async def test_a_filter_does_not_end_paging_early(tmp_path, api):
    """With an items filter, a page whose items are all filtered out still leads to the next."""
    fake, server = api
    fake.set_items([{"id": i, "status": "draft" if i <= 10 else "open"} for i in range(1, 26)])
    config = _config(tmp_path, server, "/page", items="$[?(@.status != 'draft')]", paginate=PAGE)
    async with running(config) as h:
        outcome = await h.poll()
    assert outcome.item_count == 15
    assert len(server.requests) == 3


async def test_a_failing_page_3_of_5_produces_no_events(tmp_path, api):
    """A failure on any page fails the whole poll: no events, the snapshot is unchanged."""
    fake, server = api
    fake.set_items([{"id": i, "status": "open"} for i in range(1, 51)])
    config = _config(tmp_path, server, "/link", paginate=LINK)
    async with running(config) as h:
        assert (await h.poll()).item_count == 50
        before = await h.store.load_hashes("things")
        fake.set_items([{"id": i, "status": "paid"} for i in range(1, 41)])
        fake.fail_pages[3] = Reply(500, {"error": "boom"})
        failed = await h.poll()
        assert not failed.ok
        assert "HTTP 500" in (failed.error or "")
        assert [r.query.get("page", ["1"])[0] for r in server.requests[-3:]] == ["1", "2", "3"]
        assert await h.events() == []
        after = await h.store.load_hashes("things")
        assert after.hashes == before.hashes
        fake.fail_pages.clear()
        recovered = await h.poll()
        assert recovered.ok
        kinds = {c.type for c in recovered.changes}
        assert kinds == {"updated", "deleted"}
        assert len(await h.events()) == 50


async def test_max_pages_is_a_failure_not_a_partial_list(tmp_path, api):
    """Reaching max_pages with more pages to come fails the poll; nothing is recorded."""
    _fake, server = api
    config = _config(tmp_path, server, "/link", paginate={"kind": "link", "max_pages": 2})
    async with running(config) as h:
        outcome = await h.poll()
        state = await h.store.get_source_state("things")
    assert not outcome.ok
    assert "max_pages = 2" in (outcome.error or "")
    assert len(server.requests) == 2
    assert state is not None and state.fingerprint is None and state.item_count == 0


async def test_a_key_on_two_pages_fails_the_poll(tmp_path, api):
    """An item seen on two pages (the list moved while paging) fails rather than guesses."""
    fake, server = api
    offset = {"kind": "offset", "size": 10}
    config = _config(tmp_path, server, "/offset", items="$.results[*]", paginate=offset)
    original = fake.__call__

    def shifting(req):  # an item inserted at the front between page 1 and page 2
        if req.query.get("offset") == ["10"]:
            fake.set_items([{"id": 0}, *fake.items])
        return original(req)

    server.handler = shifting
    async with running(config) as h:
        outcome = await h.poll()
    assert not outcome.ok
    assert "appears on page 1 and page 2" in (outcome.error or "")


# -- conditional requests ------------------------------------------------------------------


async def test_etags_per_page_make_an_unchanged_list_cheap(tmp_path, api):
    """Every page is asked with its own ETag; all 304 is an unchanged poll with no events."""
    _fake, server = api
    config = _config(tmp_path, server, "/link", paginate=LINK)
    async with baselined(config) as h:
        state = await h.store.get_source_state("things")
        assert state is not None and len(state.validators) == 3
        assert all("etag" in v and "last_modified" in v for v in state.validators.values())
        second = await h.poll()
        assert (second.ok, second.result, second.not_modified) == (True, "unchanged", True)
        assert second.item_count == 25
        conditional = server.requests[3:]
        assert len(conditional) == 3
        assert all(r.headers.get("if-none-match", "").startswith('"') for r in conditional)
        assert all("if-modified-since" in r.headers for r in conditional)
        assert await h.events() == []


async def test_a_change_on_a_later_page_refetches_the_earlier_ones(tmp_path, api):
    """Pages 1-2 answer 304, page 3 changed: the list is walked again in full, then diffed."""
    fake, server = api
    config = _config(tmp_path, server, "/link", paginate=LINK)
    async with baselined(config) as h:
        items = [dict(it) for it in fake.items]
        items[-1]["status"] = "paid"
        fake.set_items(items)
        server.requests.clear()
        outcome = await h.poll()
    assert outcome.ok and [c.type for c in outcome.changes] == ["updated"]
    statuses = ["if-none-match" in r.headers for r in server.requests]
    assert statuses == [True, True, True, False, False, False]


async def test_conditional_false_sends_no_validators(tmp_path, api):
    """conditional = false: never If-None-Match / If-Modified-Since (broken validators)."""
    _fake, server = api
    config = _config(tmp_path, server, "/link", conditional=False, paginate=LINK)
    async with baselined(config) as h:
        second = await h.poll()
        state = await h.store.get_source_state("things")
    assert second.result == "unchanged" and not second.not_modified
    assert not any("if-none-match" in r.headers for r in server.requests)
    assert state is not None and state.validators == {}


async def test_last_modified_alone_is_used(tmp_path):
    """An API with only Last-Modified gets If-Modified-Since, and its 304 counts as unchanged."""
    stamp = "Wed, 01 May 2024 10:00:00 GMT"

    def handler(req):
        if req.headers.get("if-modified-since") == stamp:
            return Reply(304, b"")
        return Reply(200, [{"id": 1}], {"last-modified": stamp})

    with serve(handler) as server:
        config = _config(tmp_path, server)
        async with baselined(config) as h:
            second = await h.poll()
    assert second.not_modified and second.result == "unchanged"
    assert "if-none-match" not in server.requests[1].headers


async def test_a_changed_item_definition_ignores_the_304(tmp_path, api):
    """After a fingerprint change the body is needed: no validators are sent, it re-baselines."""
    _fake, server = api
    async with baselined(_config(tmp_path, server, items=DATA)) as h:
        h.reconfigure(_config(tmp_path, server, items=DATA, ignore=["$.name"]))
        outcome = await h.poll()
    assert outcome.result == "rebaseline"
    assert "if-none-match" not in server.requests[-1].headers


# -- politeness ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_postpones_the_source(tmp_path, api, status):
    """429/503 with Retry-After: 120 sets not_before 120 s ahead; the daemon's check sees it."""
    fake, server = api
    config = _config(tmp_path, server)
    async with running(config) as h:
        fake.queued.append(Reply(status, {"error": "slow down"}, {"retry-after": "120"}))
        outcome = await h.poll()
        assert not outcome.ok
        assert outcome.not_before == h.clock.now + timedelta(seconds=120)
        state = await h.store.get_source_state("things")
        assert state is not None and state.not_before == outcome.not_before
        assert await h.pipeline.postponed_until("things", h.clock.now) == outcome.not_before
        h.clock.advance(121)
        assert await h.pipeline.postponed_until("things", h.clock.now) is None


async def test_retry_after_http_date_postpones_the_source(tmp_path, api):
    """Retry-After as an HTTP date is honoured too."""
    fake, server = api
    config = _config(tmp_path, server)
    async with running(config) as h:
        when = h.clock.now + timedelta(minutes=5)
        fake.queued.append(Reply(429, b"", {"retry-after": format_datetime(when, usegmt=True)}))
        outcome = await h.poll()
    assert outcome.not_before == when


async def test_consecutive_failures_back_off_up_to_max_backoff_and_reset(tmp_path, api):
    """Failures double the wait (capped by max_backoff); a success clears it."""
    fake, server = api
    config = _config(tmp_path, server, items=DATA, max_backoff="60s")
    async with running(config) as h:
        waits = []
        for _ in range(5):
            fake.queued.append(Reply(500, b"down"))
            outcome = await h.poll()
            waits.append(
                None
                if outcome.not_before is None
                else (outcome.not_before - h.clock.now).total_seconds()
            )
        assert waits == [None, 20.0, 40.0, 60.0, 60.0]
        state = await h.store.get_source_state("things")
        assert state is not None and state.consecutive_failures == 5
        ok = await h.poll()
        assert ok.ok
        state = await h.store.get_source_state("things")
        assert state is not None and state.consecutive_failures == 0 and state.not_before is None


# -- safety against bad polls --------------------------------------------------------------


async def test_a_poll_returning_10_percent_is_held_then_applied_after_confirmations(tmp_path, api):
    """90 of 100 items missing: held twice (no events, snapshot kept), applied the third time."""
    fake, server = api
    fake.set_items([{"id": i} for i in range(1, 101)])
    config = _config(tmp_path, server, items=DATA)
    async with baselined(config) as h:
        before = await h.store.load_hashes("things")
        fake.keep(set(range(1, 11)))
        for n in (1, 2):
            held = await h.poll()
            assert (held.ok, held.result, held.held_polls) == (True, "held", n)
            assert held.held == "would delete 90 of 100 items, more than max_deletes = 50%"
            assert await h.events() == []
            assert (await h.store.load_hashes("things")).hashes == before.hashes
            state = await h.store.get_source_state("things")
            assert state is not None and state.held_polls == n and state.held_reason
        applied = await h.poll()
        assert applied.result == "ok" and applied.held and "3 consecutive polls" in applied.held
        assert len([e for e in await h.events() if e["type"] == "deleted"]) == 90
        state = await h.store.get_source_state("things")
        assert state is not None and state.held_reason is None and state.held_polls == 0


async def test_a_held_result_that_goes_away_releases_the_hold(tmp_path, api):
    """The API recovers before the confirmations: nothing is deleted and the hold is cleared."""
    fake, server = api
    config = _config(tmp_path, server, items=DATA)
    async with baselined(config) as h:
        everything = list(fake.items)
        fake.keep({1, 2})
        assert (await h.poll()).result == "held"
        fake.set_items(everything)
        assert (await h.poll()).result == "unchanged"
        state = await h.store.get_source_state("things")
        assert await h.events() == []
    assert state is not None and state.held_reason is None and state.held_polls == 0


async def test_operator_accept_applies_the_held_result_at_the_next_poll(tmp_path, api):
    """accept_requested (set by `pollbridge accept`) applies the held poll at once."""
    fake, server = api
    config = _config(tmp_path, server, items=DATA, confirm_polls=10)
    async with baselined(config) as h:
        fake.keep({1})
        assert (await h.poll()).result == "held"
        await h.store.update_source_state("things", accept_requested=True)
        applied = await h.poll()
        state = await h.store.get_source_state("things")
    assert applied.result == "ok" and "accepted by the operator" in (applied.held or "")
    assert len(applied.events) == 24
    assert state is not None and not state.accept_requested and state.held_reason is None


async def test_max_deletes_count_and_small_snapshots(tmp_path, api):
    """An absolute max_deletes holds beyond that count; under 10 stored items nothing is held."""
    fake, server = api
    config = _config(tmp_path, server, items=DATA, max_deletes=3)
    async with baselined(config) as h:
        everything = list(fake.items)
        fake.keep(set(range(5, 26)))
        assert (await h.poll()).result == "held"
        fake.set_items(everything)
        fake.keep(set(range(4, 26)))
        assert (await h.poll()).result == "ok"
    fake.set_items([{"id": i} for i in range(1, 10)])
    small = _config(tmp_path / "small", server, items=DATA)
    async with baselined(small) as h:
        fake.keep({1})
        assert (await h.poll()).result == "ok"


async def test_deletes_false_sends_no_deletion_events(tmp_path, api):
    """deletes = false: a vanished item leaves the snapshot silently."""
    fake, server = api
    config = _config(tmp_path, server, items=DATA, deletes=False)
    async with baselined(config) as h:
        fake.keep(set(range(2, 26)) | {99})
        fake.set_items([*fake.items, {"id": 99}])
        outcome = await h.poll()
        hashes = await h.store.load_hashes("things")
    assert [(c.type, c.key_text) for c in outcome.changes] == [("created", "99")]
    assert "1" not in hashes.hashes and "99" in hashes.hashes


async def test_changing_key_rebaselines_silently(tmp_path, api):
    """A new key re-baselines: no created/deleted storm, the snapshot is keyed the new way."""
    _fake, server = api
    async with baselined(_config(tmp_path, server, items=DATA)) as h:
        h.reconfigure(_config(tmp_path, server, items=DATA, key="$.name"))
        outcome = await h.poll()
        hashes = await h.store.load_hashes("things")
        again = await h.poll()
        assert await h.events() == []
    assert (outcome.result, outcome.changes) == ("rebaseline", [])
    assert sorted(hashes.hashes)[:2] == ["item 1", "item 10"]
    assert again.result == "unchanged"


async def test_rebaseline_emit_sends_created_events(tmp_path, api):
    """rebaseline = "emit": the new baseline is announced with a created event per item."""
    _fake, server = api
    emit = {"items": DATA, "rebaseline": "emit"}
    async with running(_config(tmp_path, server, **emit)) as h:
        first = await h.poll()
        h.reconfigure(_config(tmp_path, server, **emit, fields=["$.id", "$.status"]))
        outcome = await h.poll()
    assert first.changes == []  # baseline stays silent: that is `baseline`, not `rebaseline`
    assert outcome.result == "rebaseline"
    assert [c.type for c in outcome.changes] == ["created"] * 25
    assert outcome.changes[0].after == {"id": 1, "status": "open"}


async def test_adding_pagination_rebaselines(tmp_path, api):
    """paginate is part of what defines the items: adding it re-baselines."""
    _fake, server = api
    async with running(_config(tmp_path, server, "/page")) as h:
        assert (await h.poll()).item_count == 10
        h.reconfigure(_config(tmp_path, server, "/page", paginate=PAGE))
        outcome = await h.poll()
    assert (outcome.result, outcome.item_count, outcome.changes) == ("rebaseline", 25, [])
