"""Formats against what standards and real feeds do: entities in any encoding, feeds without
ids, HTML entities, Atom links, byte order marks and long CSV fields."""

from __future__ import annotations

import csv

import pytest

from bridge.core.extract import ExtractionFailed, ItemSpec, extract_items
from bridge.core.formats import DERIVED_ID_FIELDS, FormatError, derived_feed_id, parse_document
from bridge.core.paths import compile_path

_INJECTED = (
    '<?xml version="1.0" encoding="{encoding}"?>'
    '<!DOCTYPE rss [<!ENTITY x "INJECTED">]>'
    '<rss version="2.0"><channel><title>t</title>'
    "<item><guid>1</guid><title>&x;</title></item></channel></rss>"
)


def _nested_bomb(encoding: str) -> bytes:
    levels = ['<!ENTITY a0 "INJECTED">'] + [
        f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 5)
    ]
    return (
        f'<?xml version="1.0" encoding="{encoding}"?><!DOCTYPE rss [{"".join(levels)}]>'
        '<rss version="2.0"><channel><item><guid>1</guid><title>&a4;</title></item></channel></rss>'
    ).encode(encoding)


@pytest.mark.parametrize("encoding", ["cp037", "cp500", "cp1140", "utf-16-le", "utf-7"])
@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("rss", None),
        ("xml", None),
        ("auto", "application/rss+xml"),
        ("auto", "application/atom+xml"),
        ("auto", "application/xml"),
        ("auto", "text/xml"),
    ],
)
def test_entity_declarations_are_refused_in_every_encoding(
    encoding: str, fmt: str, content_type: str | None
) -> None:
    """A declaration is refused whatever encoding hides it from a byte scan (EBCDIC, UTF-7)."""
    body = _INJECTED.format(encoding=encoding).encode(encoding)
    with pytest.raises(FormatError, match="entity declarations are refused"):
        parse_document(body, fmt, content_type=content_type)


def test_a_declaration_split_by_stateful_encoding_escapes_is_refused() -> None:
    """ISO-2022-JP can put a mode switch inside '<!ENTITY'; it is decoded before the check."""
    body = (
        b'<?xml version="1.0" encoding="iso-2022-jp"?>'
        b'<!DOCTYPE rss [<\x1b(B!ENTITY x "INJECTED">]><rss version="2.0"><channel>'
        b"<item><guid>1</guid><title>&x;</title></item></channel></rss>"
    )
    assert b"<!ENTITY" not in body
    with pytest.raises(FormatError, match="entity declarations are refused"):
        parse_document(body, "rss")


@pytest.mark.parametrize("encoding", ["cp037", "cp1140"])
@pytest.mark.timeout(2)
def test_nested_entities_in_ebcdic_never_expand(encoding: str) -> None:
    """Five nested levels in an EBCDIC feed are refused, not expanded to a huge title."""
    with pytest.raises(FormatError, match="entity declarations are refused"):
        parse_document(_nested_bomb(encoding), "rss")


def test_an_ebcdic_feed_without_declarations_still_parses() -> None:
    """Refusing declarations in any encoding does not refuse the encoding itself."""
    body = (
        '<?xml version="1.0" encoding="cp037"?><rss version="2.0"><channel><title>t</title>'
        "<item><guid>1</guid><title>hello</title></item></channel></rss>"
    ).encode("cp037")
    assert parse_document(body, "rss")[0]["title"] == "hello"


_EXTERNAL_DTD = {
    "xml": b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:9/x.dtd"><r>a&leak;b</r>',
    "rss": (
        b'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "http://127.0.0.1:9/x.dtd">'
        b'<rss version="2.0"><channel><title>t</title>'
        b"<item><guid>1</guid><title>a&leak;b</title></item></channel></rss>"
    ),
}


@pytest.mark.parametrize(
    ("fmt", "body", "content_type"),
    [
        ("xml", _EXTERNAL_DTD["xml"], None),
        ("auto", _EXTERNAL_DTD["xml"], "application/xml"),
        ("rss", _EXTERNAL_DTD["rss"], None),
        ("auto", _EXTERNAL_DTD["rss"], "application/rss+xml"),
    ],
)
def test_undefined_entity_with_an_external_dtd_fails_naming_it(
    fmt: str, body: bytes, content_type: str | None
) -> None:
    """An entity only an unread DTD could define fails the poll by name, never vanishes."""
    with pytest.raises(FormatError, match="undefined entity &leak;"):
        parse_document(body, fmt, content_type=content_type)


def _spec() -> ItemSpec:
    return ItemSpec(items=compile_path("$[*]"), key=(compile_path("$.id"),))


_NO_ID_FEEDS = {
    "rss": (
        b'<rss version="2.0"><channel><title>t</title>'
        b"<item><title>Item 1 title</title></item>"
        b"<item><title>Item 2 title</title><pubDate>Mon, 06 Jan 2025 10:00:00 GMT</pubDate></item>"
        b"<item><description>only a summary</description></item>"
        b"</channel></rss>"
    ),
    "atom": (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        b"<entry><title>Item 1 title</title></entry>"
        b"<entry><title>Item 2 title</title><updated>2025-01-06T10:00:00Z</updated></entry>"
        b"<entry><summary>only a summary</summary></entry>"
        b"</feed>"
    ),
}


@pytest.mark.parametrize("kind", sorted(_NO_ID_FEEDS))
def test_entries_without_guid_id_or_link_get_a_stable_derived_key(kind: str) -> None:
    """Such entries are keyed by a hash of their content: the same on every poll, one each."""
    first = extract_items(parse_document(_NO_ID_FEEDS[kind], "rss"), _spec())
    again = extract_items(parse_document(_NO_ID_FEEDS[kind], "rss"), _spec())
    assert [i.key for i in first] == [i.key for i in again]
    assert len({i.key for i in first}) == 3
    for item in first:
        assert item.key == derived_feed_id(item.value)
        assert str(item.key).startswith("derived:")
        assert item.value["link"] is None


def test_the_derived_key_uses_exactly_the_documented_fields() -> None:
    """Title, published, updated and summary make the key; author and categories do not."""
    assert DERIVED_ID_FIELDS == ("title", "published", "updated", "summary")
    base = {f: None for f in ("title", "published", "updated", "summary", "author")}
    base["categories"] = []
    for name in DERIVED_ID_FIELDS:
        assert derived_feed_id({**base, name: "x"}) != derived_feed_id(base)
    assert derived_feed_id({**base, "author": "a", "categories": ["c"]}) == derived_feed_id(base)


def test_two_entries_alike_in_every_key_field_still_fail_as_a_repeated_key() -> None:
    """A true duplicate (same title, dates and summary) is still a repeated key."""
    body = (
        b'<rss version="2.0"><channel><title>t</title><item><title>Same</title></item>'
        b"<item><title>Same</title></item></channel></rss>"
    )
    with pytest.raises(ExtractionFailed, match="appears twice"):
        extract_items(parse_document(body, "rss"), _spec())


@pytest.mark.parametrize(
    "body",
    [
        b'<rss version="2.0"><channel><title>A&nbsp;B</title></channel></rss>',
        b'<rss version="2.0"><channel><title>A&eacute;&hellip;B</title></channel></rss>',
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>A&nbsp;B</title></feed>',
        b'<?xml version="1.0"?><rss version="2.0"><channel><description>&copy;</description>'
        b"</channel></rss>",
    ],
)
def test_html_named_entities_at_channel_level_are_accepted(body: bytes) -> None:
    """A feed whose only oddity is an HTML entity in its channel reads as a feed (no items yet)."""
    assert parse_document(body, "rss") == []


@pytest.mark.parametrize("where", ["channel", "item"])
def test_html_entities_read_alike_in_channel_and_items(where: str) -> None:
    """The same entity is accepted whether it is in the channel or in an item."""
    channel = "A&nbsp;B" if where == "channel" else "AB"
    item = "x&nbsp;y" if where == "item" else "xy"
    body = (
        f'<rss version="2.0"><channel><title>{channel}</title>'
        f"<item><guid>1</guid><title>{item}</title></item></channel></rss>"
    ).encode()
    (entry,) = parse_document(body, "rss")
    assert entry["title"] in ("x\xa0y", "xy")


@pytest.mark.parametrize("where", ["channel", "item"])
def test_entities_that_are_neither_xml_nor_html_fail_naming_them(where: str) -> None:
    """&bogus; is not a reference any reader knows: the poll fails and says which."""
    channel = "A&bogus;B" if where == "channel" else "AB"
    item = "x&bogus;y" if where == "item" else "xy"
    body = (
        f'<rss version="2.0"><channel><title>{channel}</title>'
        f"<item><guid>1</guid><title>{item}</title></item></channel></rss>"
    ).encode()
    with pytest.raises(FormatError, match="undefined entity &bogus;"):
        parse_document(body, "rss")


def test_entity_text_inside_cdata_is_not_a_reference() -> None:
    """&bogus; inside CDATA is literal text, so it is accepted as written."""
    body = (
        b'<rss version="2.0"><channel><item><guid>1</guid>'
        b"<description><![CDATA[a &bogus; b]]></description></item></channel></rss>"
    )
    assert "bogus" in parse_document(body, "rss")[0]["summary"]


@pytest.mark.parametrize(
    ("body", "expected_id"),
    [
        (
            b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>urn:uuid:1</id>'
            b"<title>x</title></entry></feed>",
            "urn:uuid:1",
        ),
        (
            b'<rss version="2.0"><channel><item><guid>abc</guid><title>x</title></item>'
            b"</channel></rss>",
            "abc",
        ),
    ],
    ids=["atom-id", "rss-guid"],
)
def test_an_entry_without_a_link_element_has_link_null(body: bytes, expected_id: str) -> None:
    """The id is never copied into link: link is null unless the entry has a <link>."""
    (entry,) = parse_document(body, "rss")
    assert entry["link"] is None
    assert entry["id"] == expected_id


def test_an_atom_entry_with_a_link_keeps_it() -> None:
    """An alternate <link> is the entry's link, as before."""
    body = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>urn:uuid:1</id>'
        b'<link href="https://example.com/1"/></entry></feed>'
    )
    assert parse_document(body, "rss")[0]["link"] == "https://example.com/1"


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("json", None), ("auto", "application/json"), ("auto", None)]
)
def test_a_json_body_starting_with_a_utf8_bom_is_read(fmt: str, content_type: str | None) -> None:
    """RFC 8259 lets a parser skip a UTF-8 byte order mark; JSON does, like JSON Lines and CSV."""
    body = b'\xef\xbb\xbf{"data": [{"id": 1}]}'
    assert parse_document(body, fmt, content_type=content_type) == {"data": [{"id": 1}]}


def test_an_invalid_json_body_after_a_bom_still_names_the_problem() -> None:
    """Skipping the mark does not hide a real error after it."""
    with pytest.raises(FormatError, match="not valid JSON"):
        parse_document(b"\xef\xbb\xbf{", "json")


@pytest.mark.parametrize("size", [131_073, 1_000_000])
def test_csv_fields_longer_than_pythons_default_limit_are_read(size: int) -> None:
    """A field over csv's 131,072-character default is read: only max_bytes bounds a body."""
    big = "x" * size
    body = f'id,text\n1,"{big}"\n2,short\n'.encode()
    rows = parse_document(body, "csv")
    assert rows == [{"id": "1", "text": big}, {"id": "2", "text": "short"}]
    assert csv.field_size_limit() >= size
