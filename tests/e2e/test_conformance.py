"""Issue-14 conformance end to end: real polls of a local API, asserting on the recorded events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bridge.config import load_config
from bridge.core.patch import apply_patch
from bridge.http.poller import Poller
from bridge.pipeline import Pipeline
from bridge.store.sqlite import SQLiteStore
from tests.support.servers import Reply, serve


async def _poll(config_path: Path) -> Any:
    config = load_config(config_path, env={})
    store = SQLiteStore(config.state_location)
    await store.open()
    try:
        async with httpx.AsyncClient() as client:
            pipeline = Pipeline(config, store, Poller(client), clock=lambda: datetime.now(UTC))
            return await pipeline.poll(config.sources[0])
    finally:
        await store.close()


def _reply(body: bytes, content_type: str) -> Reply:
    return Reply(200, body, {"content-type": content_type})


def _config(tmp_path: Path, url: str, settings: str) -> Path:
    path = tmp_path / "pollbridge.toml"
    path.write_text(
        f'[bridge]\nstate = "{tmp_path}/s.db"\n[[sources]]\nname = "src"\n'
        f'url = "{url}"\nevery = "1m"\n{settings}\n'
    )
    return path


async def test_ignored_array_index_gives_a_patch_of_the_real_indices(tmp_path: Path) -> None:
    """ignore = ["$.tags[0]"]: the event's changes, applied to its before, give its after."""
    doc = {"body": [{"id": "k", "tags": ["a", "b"]}]}
    with serve(lambda _r: _reply(orjson.dumps(doc["body"]), "application/json")) as api:
        path = _config(tmp_path, api.url("/"), 'ignore = ["$.tags[0]"]')
        assert (await _poll(path)).ok
        doc["body"] = [{"id": "k", "tags": ["a", "c"]}]
        outcome = await _poll(path)
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
        path = _config(tmp_path, api.url("/"), 'format = "rss"\nbaseline = "emit"')
        first = await _poll(path)
        second = await _poll(path)
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
        path = _config(tmp_path, api.url("/"), 'format = "auto"\nbaseline = "emit"')
        outcome = await _poll(path)
    assert not outcome.ok
    assert "entity declarations are refused" in (outcome.error or "")
    assert outcome.events == []


async def test_a_json_body_with_a_utf8_bom_is_polled(tmp_path: Path) -> None:
    """An API that prefixes its JSON with a byte order mark is read like any other."""
    body = b'\xef\xbb\xbf{"data": [{"id": 1}]}'
    with serve(lambda _r: _reply(body, "application/json")) as api:
        path = _config(tmp_path, api.url("/"), 'items = "$.data[*]"\nbaseline = "emit"')
        outcome = await _poll(path)
    assert outcome.ok, outcome.error
    assert [e.key for e in outcome.events] == ["1"]
