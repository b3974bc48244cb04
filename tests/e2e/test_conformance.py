"""Issue-14 conformance end to end: real polls of a local API, asserting on the recorded events."""

from __future__ import annotations

from pathlib import Path

import orjson

from bridge.core.patch import apply_patch
from tests.support.pipelines import one_source, poll_once
from tests.support.servers import Reply, serve


def _reply(body: bytes, content_type: str) -> Reply:
    return Reply(200, body, {"content-type": content_type})


async def test_ignored_array_index_gives_a_patch_of_the_real_indices(tmp_path: Path) -> None:
    """ignore = ["$.tags[0]"]: the event's changes, applied to its before, give its after."""
    doc = {"body": [{"id": "k", "tags": ["a", "b"]}]}
    with serve(lambda _r: _reply(orjson.dumps(doc["body"]), "application/json")) as api:
        path = one_source(tmp_path, "src", api.url("/"), ignore=["$.tags[0]"])
        assert (await poll_once(path)).ok
        doc["body"] = [{"id": "k", "tags": ["a", "c"]}]
        outcome = await poll_once(path)
    assert outcome.ok, outcome.error
    (event,) = outcome.events
    assert event.changes == [{"op": "replace", "path": "/tags/1", "value": "c"}]
    assert apply_patch(event.before, event.changes) == event.after


async def test_feed_entries_without_ids_are_polled_with_stable_keys(tmp_path: Path) -> None:
    """Entries with no guid, id or link are created once, then stay quiet on the next poll."""
    body = (
        b'<rss version="2.0"><channel><title>t</title><item><title>Item 1 title</title></item>'
        b"<item><title>Item 2 title</title></item></channel></rss>"
    )
    with serve(lambda _r: _reply(body, "application/rss+xml")) as api:
        path = one_source(tmp_path, "src", api.url("/"), format="rss", baseline="emit")
        first = await poll_once(path)
        second = await poll_once(path)
    assert first.ok, first.error
    assert [e.type for e in first.events] == ["created", "created"]
    assert all(str(e.key).startswith("derived:") for e in first.events)
    assert second.ok, second.error
    assert second.events == []


async def test_an_ebcdic_feed_declaring_entities_records_nothing(tmp_path: Path) -> None:
    """A cp037 feed with an entity declaration fails the poll: no INJECTED title is sent."""
    body = (
        '<?xml version="1.0" encoding="cp037"?><!DOCTYPE rss [<!ENTITY x "INJECTED">]>'
        '<rss version="2.0"><channel><item><guid>1</guid><title>&x;</title></item></channel></rss>'
    ).encode("cp037")
    with serve(lambda _r: _reply(body, "application/rss+xml")) as api:
        path = one_source(tmp_path, "src", api.url("/"), format="auto", baseline="emit")
        outcome = await poll_once(path)
    assert not outcome.ok
    assert "entity declarations are refused" in (outcome.error or "")
    assert outcome.events == []


async def test_a_json_body_with_a_utf8_bom_is_polled(tmp_path: Path) -> None:
    """An API that prefixes its JSON with a byte order mark is read like any other."""
    body = b'\xef\xbb\xbf{"data": [{"id": 1}]}'
    with serve(lambda _r: _reply(body, "application/json")) as api:
        path = one_source(tmp_path, "src", api.url("/"), items="$.data[*]", baseline="emit")
        outcome = await poll_once(path)
    assert outcome.ok, outcome.error
    assert [e.key for e in outcome.events] == ["1"]
