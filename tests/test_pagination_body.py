"""Cursor pagination with the cursor in the JSON body: plain POST bodies and GraphQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.config import Config
from tests.support.configs import source
from tests.support.pipelines import make_config, running
from tests.support.servers import Reply, Request, serve

ITEMS = [{"id": i} for i in range(1, 8)]


def _search(req: Request) -> Reply:
    body = json.loads(req.body)
    cursor = (body.get("page") or {}).get("cursor")
    start = 0 if cursor is None else int(cursor)
    chunk = ITEMS[start : start + 3]
    more = start + 3 < len(ITEMS)
    return Reply(200, {"results": chunk, "next": str(start + 3) if more else None})


def _config(tmp_path: Path, url: str, paginate: dict[str, str], **fields: Any) -> Config:
    """The POST source ``search`` paged by a cursor (``paginate``: the rest of that table);
    ``fields`` override its body and add keys."""
    search = source(
        "search",
        url,
        every="1m",
        method="POST",
        items="$.results[*]",
        **{"body": {"filter": {"open": True}}, **fields},
        paginate={"kind": "cursor", **paginate},
    )
    return make_config(tmp_path, search)


BODY_CURSOR = {"cursor": "$.next", "body_param": "page.cursor"}


async def test_a_plain_post_body_carries_the_cursor(tmp_path):
    """body_param sets the cursor inside a non-GraphQL body; the rest of the body stays."""
    with serve(_search) as server:
        async with running(_config(tmp_path, server.url("/search"), BODY_CURSOR)) as h:
            outcome = await h.poll()
    assert (outcome.result, outcome.item_count, outcome.pages) == ("baseline", 7, 3), outcome.error
    bodies = [json.loads(r.body) for r in server.requests]
    assert bodies == [
        {"filter": {"open": True}},
        {"filter": {"open": True}, "page": {"cursor": "3"}},
        {"filter": {"open": True}, "page": {"cursor": "6"}},
    ]
    assert all(r.query == {} for r in server.requests)  # nothing in the query string
    assert all(r.headers["content-type"] == "application/json" for r in server.requests)


async def test_a_repeated_body_cursor_is_a_loop(tmp_path):
    """An API that hands back the same cursor forever fails the poll instead of spinning."""
    with serve(lambda _r: Reply(200, {"results": [], "next": "same"})) as server:
        async with running(_config(tmp_path, server.url("/search"), BODY_CURSOR)) as h:
            outcome = await h.poll()
    assert not outcome.ok and "pagination loops" in (outcome.error or "")
    assert len(server.requests) == 2  # the third page would repeat the second: not asked


async def test_has_next_page_without_an_end_cursor_fails_the_poll(tmp_path):
    """hasNextPage true and endCursor null would cut the list short: the poll fails."""
    page = {"results": [{"id": 1}], "info": {"hasNextPage": True, "endCursor": None}}
    with serve(lambda _r: Reply(200, page)) as server:
        paginate = {
            "cursor": "$.info.endCursor",
            "has_more": "$.info.hasNextPage",
            "body_param": "variables.after",
        }
        config = _config(
            tmp_path, server.url("/graphql"), paginate, body=None, graphql={"query": "{ a }"}
        )
        async with running(config) as h:
            outcome = await h.poll()
            state = await h.store.get_source_state("search")
    assert not outcome.ok
    assert "hasNextPage' is true but there is no cursor" in (outcome.error or "")
    assert state is not None and state.item_count == 0
