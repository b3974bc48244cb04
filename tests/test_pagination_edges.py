"""Pagination edge cases (respx): loops, other origins, bad next-page data, POST sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import respx

from bridge.config import Config
from bridge.outcome import PollOutcome
from tests.support.configs import source
from tests.support.pipelines import make_config, running

API = "https://api.example.com/v1/items"


def _config(tmp_path: Path, **fields: Any) -> Config:
    """Source ``s`` at :data:`API` polled every minute; ``fields`` are its further keys."""
    return make_config(tmp_path, source("s", API, every="1m", **{"items": None, **fields}))


async def _one_poll(config: Config) -> PollOutcome:
    async with running(config) as h:
        return await h.poll()


async def test_a_next_link_back_to_a_seen_page_fails(tmp_path):
    """A next link that points at a page already fetched is a loop, not an endless poll."""
    config = _config(tmp_path, paginate={"kind": "link"})
    with respx.mock() as mock:
        mock.get(API, params={"page": "2"}).respond(
            200, json=[{"id": 2}], headers={"link": f'<{API}>; rel="next"'}
        )
        mock.get(API).respond(
            200, json=[{"id": 1}], headers={"link": f'<{API}?page=2>; rel="next"'}
        )
        outcome = await _one_poll(config)
    assert not outcome.ok and "pagination loops: page 3 repeats" in (outcome.error or "")


async def test_a_next_page_on_another_origin_is_refused(tmp_path):
    """Credentials never follow a next link to another host: the poll fails instead."""
    config = _config(
        tmp_path,
        items="$.data[*]",
        auth={"kind": "bearer", "token": "tok-secret-1"},
        paginate={"kind": "next_url", "next": "$.next"},
    )
    with respx.mock() as mock:
        mock.get(API).respond(200, json={"data": [{"id": 1}], "next": "https://evil.example/x"})
        outcome = await _one_poll(config)
        assert len(mock.calls) == 1
    assert not outcome.ok and "another origin: https://evil.example/x" in (outcome.error or "")


async def test_has_more_with_an_empty_page_fails(tmp_path):
    """has_more = true on a page with no items gives no cursor: the poll fails, clearly."""
    config = _config(
        tmp_path,
        items="$.data[*]",
        paginate={
            "kind": "cursor",
            "cursor_from_last_item": "$.id",
            "has_more": "$.has_more",
            "param": "starting_after",
        },
    )
    with respx.mock() as mock:
        mock.get(API).respond(200, json={"data": [], "has_more": True})
        async with running(config) as h:
            outcome = await h.poll()
            state = await h.store.get_source_state("s")
    assert not outcome.ok and "has_more" in (outcome.error or "")
    assert state is not None and state.last_result == "error"


async def test_post_sources_page_with_their_body_and_without_validators(tmp_path):
    """A POST source sends its body on every page and never If-None-Match."""
    config = _config(
        tmp_path,
        method="POST",
        body={"q": "open"},
        items="$.items[*]",
        paginate={"kind": "cursor", "cursor": "$.next", "param": "after"},
    )
    with respx.mock() as mock:
        mock.post(API, params={"after": "c2"}).respond(
            200, json={"items": [{"id": 2}], "next": None}, headers={"etag": '"2"'}
        )
        mock.post(API).respond(
            200, json={"items": [{"id": 1}], "next": "c2"}, headers={"etag": '"1"'}
        )
        async with running(config) as h:
            first = await h.poll()
            second = await h.poll()
        requests: list[httpx.Request] = [c.request for c in mock.calls]
    assert (first.item_count, second.result) == (2, "unchanged")
    assert [r.content for r in requests] == [b'{"q":"open"}'] * 4
    assert not any("if-none-match" in r.headers for r in requests)
