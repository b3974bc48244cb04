"""Non-JSON sources end to end: each format's added, changed and removed entry gives the right events."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.config import load_config
from tests.support.pipelines import one_source, poll_once
from tests.support.servers import Reply, serve

DATA = Path(__file__).resolve().parents[1] / "data" / "formats"

Entry = tuple[str, str]  # (id, title)


def rss2(entries: list[Entry]) -> bytes:
    items = "".join(
        f"<item><guid>{i}</guid><title>{t}</title><link>https://ex.com/{i}</link>"
        "<pubDate>Mon, 03 Feb 2025 10:00:00 GMT</pubDate></item>"
        for i, t in entries
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        f"<link>https://ex.com</link><description>d</description>{items}</channel></rss>"
    ).encode()


def atom(entries: list[Entry]) -> bytes:
    items = "".join(
        f'<entry><id>{i}</id><title>{t}</title><link href="https://ex.com/{i}"/>'
        "<updated>2025-02-03T10:00:00Z</updated></entry>"
        for i, t in entries
    )
    return (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        f"<id>urn:x</id><updated>2025-02-03T10:00:00Z</updated>{items}</feed>"
    ).encode()


def xml_api(entries: list[Entry]) -> bytes:
    items = "".join(f'<order id="{i}"><title>{t}</title></order>' for i, t in entries)
    return f'<?xml version="1.0"?><response><orders>{items}</orders></response>'.encode()


def csv_doc(entries: list[Entry]) -> bytes:
    return ("id;title\r\n" + "".join(f"{i};{t}\r\n" for i, t in entries)).encode("cp1252")


def jsonl(entries: list[Entry]) -> bytes:
    return "".join(f'{{"id": "{i}", "title": "{t}"}}\n' for i, t in entries).encode()


CASES: list[tuple[str, dict[str, str], Callable[[list[Entry]], bytes], str]] = [
    ("rss2", {"format": "rss"}, rss2, "application/rss+xml"),
    ("atom", {"format": "auto"}, atom, "application/atom+xml"),
    (
        "xml",
        {"format": "xml", "items": "$.response.orders.order[*]", "key": "$['@id']"},
        xml_api,
        "application/xml",
    ),
    ("csv", {"format": "csv", "delimiter": ";", "encoding": "cp1252"}, csv_doc, "text/csv"),
    ("jsonl", {"format": "jsonl"}, jsonl, "application/x-ndjson"),
]


@pytest.mark.parametrize(("name", "settings", "render", "ctype"), CASES, ids=[c[0] for c in CASES])
async def test_added_changed_removed_entries(tmp_path, name, settings, render, ctype):
    """One added, one changed and one removed entry give exactly created, updated, deleted."""
    doc = {"body": render([("a", "Alpha"), ("b", "Beta"), ("c", "Gamma")])}
    with serve(lambda _r: Reply(200, doc["body"], {"content-type": ctype})) as api:
        path = one_source(tmp_path, name, api.url("/feed"), **settings)
        first = await poll_once(path)
        assert first.ok, first.error
        assert (first.result, first.item_count) == ("baseline", 3)
        doc["body"] = render([("a", "Alpha"), ("b", "Beta v2"), ("d", "Delta")])
        second = await poll_once(path)
    assert second.ok, second.error
    got = sorted((e.type, e.key) for e in second.events)
    assert got == [("created", "d"), ("deleted", "c"), ("updated", "b")]
    updated = next(e for e in second.events if e.type == "updated")
    assert {"op": "replace", "path": "/title", "value": "Beta v2"} in updated.changes


@pytest.mark.parametrize("fixture", ["billion_laughs.xml", "billion_laughs_feed.xml"])
@pytest.mark.parametrize("fmt", ["xml", "rss"])
async def test_billion_laughs_is_refused_with_no_events(tmp_path, fixture, fmt):
    """An entity-expansion bomb fails the poll with a clear reason and records nothing."""
    body = (DATA / fixture).read_bytes()
    with serve(lambda _r: Reply(200, body, {"content-type": "application/xml"})) as api:
        path = one_source(tmp_path, "bomb", api.url("/"), format=fmt)
        outcome = await poll_once(path)
    assert not outcome.ok
    assert "entit" in (outcome.error or "").lower()
    assert outcome.events == []


def test_example_configs_for_formats_validate():
    """The shipped feed and CSV examples load."""
    root = Path(__file__).resolve().parents[2] / "config" / "examples"
    feed = load_config(root / "releases-feed.toml", env={})
    assert feed.sources[0].format == "rss"
    csv = load_config(root / "csv-export.toml", env={})
    assert (csv.sources[0].delimiter, csv.sources[0].encoding) == (";", "cp1252")
