"""Formats: from a fetched body (JSON, JSON Lines, CSV, XML, RSS/Atom) to a JSON-like document."""

from __future__ import annotations

import csv
import io
import json
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.formats import (
    FORMATS,
    FormatError,
    FormatOptions,
    detect_format,
    parse_document,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "formats"


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def expected(name: str) -> Any:
    return json.loads((DATA / f"{name.rsplit('.', 1)[0]}.expected.json").read_text("utf-8"))


WELL_FORMED = [
    pytest.param("rss2.xml", "rss", "application/rss+xml", id="rss2"),
    pytest.param("atom.xml", "rss", "application/atom+xml", id="atom"),
    pytest.param("rss1.rdf", "rss", "application/rdf+xml", id="rss1"),
    pytest.param("api.xml", "xml", "application/xml", id="xml"),
    pytest.param("export.csv", "csv", "text/csv; charset=utf-8", id="csv"),
    pytest.param("events.jsonl", "jsonl", "application/x-ndjson", id="jsonl"),
]


@pytest.mark.parametrize(("name", "fmt", "content_type"), WELL_FORMED)
def test_fixture_parses_to_documented_shape(name: str, fmt: str, content_type: str) -> None:
    """Each fixture parses to the shape recorded in its .expected.json file."""
    assert parse_document(fixture(name), fmt) == expected(name)


@pytest.mark.parametrize(("name", "fmt", "content_type"), WELL_FORMED)
def test_auto_picks_the_format_from_content_type(name: str, fmt: str, content_type: str) -> None:
    """``auto`` with the server's Content-Type gives what the explicit format gives."""
    assert detect_format(content_type, fixture(name)) == fmt
    assert parse_document(fixture(name), "auto", content_type=content_type) == expected(name)


@pytest.mark.parametrize(
    ("name", "fmt", "fragment", "line", "column"),
    [
        pytest.param("malformed.json", "json", "not valid JSON: unexpected end", 2, 1, id="json"),
        pytest.param(
            "malformed.jsonl", "jsonl", "not valid JSON: trailing comma", 3, 9, id="jsonl"
        ),
        pytest.param(
            "malformed.csv", "csv", "the row has 3 fields but the header has 2", 3, None, id="csv"
        ),
        pytest.param(
            "malformed.xml", "xml", "not well-formed XML: mismatched tag", 3, 20, id="xml"
        ),
        pytest.param(
            "malformed_feed.xml",
            "rss",
            "not an RSS or Atom feed: not well-formed XML: no element found",
            5,
            1,
            id="rss",
        ),
    ],
)
def test_malformed_input_names_the_problem_and_place(
    name: str, fmt: str, fragment: str, line: int, column: int | None
) -> None:
    """A malformed body raises FormatError saying what is wrong and on which line."""
    with pytest.raises(FormatError) as caught:
        parse_document(fixture(name), fmt)
    error = caught.value
    assert fragment in str(error)
    assert (error.fmt, error.line, error.column) == (fmt, line, column)
    assert f"line {line}" in str(error)
    assert "Traceback" not in str(error)


def test_malformed_csv_names_the_row() -> None:
    """A CSV row with more fields than the header is reported by its data row number."""
    with pytest.raises(FormatError, match=r"\(row 2, line 3\)$") as caught:
        parse_document(fixture("malformed.csv"), "csv")
    assert caught.value.row == 2


@pytest.mark.parametrize(
    ("name", "fmt", "content_type"),
    [
        ("billion_laughs.xml", "xml", None),
        ("billion_laughs.xml", "rss", None),
        ("billion_laughs.xml", "auto", "text/xml"),
        ("billion_laughs_feed.xml", "rss", None),
        ("billion_laughs_feed.xml", "auto", "application/rss+xml"),
        ("billion_laughs_feed.xml", "auto", "application/xml"),
    ],
)
@pytest.mark.timeout(1)
def test_billion_laughs_is_refused(name: str, fmt: str, content_type: str | None) -> None:
    """An XML bomb is refused at its first entity declaration, before anything expands."""
    with pytest.raises(FormatError, match="entity declarations are refused") as caught:
        parse_document(fixture(name), fmt, content_type=content_type)
    assert caught.value.line == 3


@pytest.mark.parametrize("fmt", ["xml", "rss"])
def test_external_entity_is_refused(fmt: str) -> None:
    """An external entity (XXE) is refused, so no local file can leak into a payload."""
    body = (
        b'<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        b'<rss version="2.0"><channel><item><title>&xxe;</title></item></channel></rss>'
    )
    with pytest.raises(FormatError, match=r"refused for safety .*'xxe'"):
        parse_document(body, fmt)


def test_entities_in_a_broken_prolog_are_still_refused() -> None:
    """A feed whose prolog is not well-formed cannot slip entity declarations to feedparser."""
    body = b"  \n" + fixture("billion_laughs_feed.xml")
    with pytest.raises(FormatError, match="entity declarations are refused"):
        parse_document(body, "rss")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-32-be"])
def test_entities_are_refused_in_any_unicode_encoding(encoding: str) -> None:
    """A wide-encoded XML bomb is refused too, even where expat cannot read the encoding."""
    text = fixture("billion_laughs_feed.xml").decode("utf-8")
    body = text.replace('version="1.0"', f'version="1.0" encoding="{encoding}"', 1).encode(encoding)
    with pytest.raises(FormatError, match="entity declarations are refused"):
        parse_document(body, "rss")


def test_feed_in_an_encoding_expat_cannot_read_still_parses() -> None:
    """feedparser transcodes a Shift_JIS feed that expat alone would refuse."""
    body = (
        '<?xml version="1.0" encoding="shift_jis"?>\n<rss version="2.0"><channel>'
        "<item><title>お知らせ</title><guid>n1</guid></item></channel></rss>"
    ).encode("shift_jis")
    assert parse_document(body, "rss")[0]["title"] == "お知らせ"
    with pytest.raises(FormatError, match="cannot read the encoding the XML declares"):
        parse_document(body, "xml")


def test_xml_in_utf16_parses() -> None:
    """An XML body in UTF-16 (with its byte order mark) reads like UTF-8."""
    body = '<?xml version="1.0" encoding="utf-16"?><a x="é">ü</a>'.encode("utf-16")
    assert parse_document(body, "xml") == {"a": {"@x": "é", "#text": "ü"}}


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        (
            "xml",
            b'<?xml version="1.0"?>\n<!DOCTYPE orders SYSTEM "http://192.0.2.1/orders.dtd">\n'
            b'<orders><order id="1"/></orders>',
        ),
        (
            "rss",
            b'<?xml version="1.0"?>\n<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS'
            b' 0.91//EN" "http://192.0.2.1/rss-0.91.dtd">\n<rss version="0.91"><channel>'
            b"<item><title>A</title><link>/a</link></item></channel></rss>",
        ),
    ],
)
def test_external_dtd_is_never_fetched(
    fmt: str, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DOCTYPE naming a remote DTD parses without any network access."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access in a pure parser")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    document = parse_document(body, fmt)
    assert attempts == []
    assert document  # parsed, not refused


@pytest.mark.parametrize(
    ("root", "link"),
    [
        pytest.param('<rss version="2.0">', "/posts/1", id="no-base"),
        pytest.param(
            '<rss version="2.0" xml:base="https://ex.com/blog/">',
            "https://ex.com/posts/1",
            id="xml-base",
        ),
    ],
)
def test_relative_feed_link_resolves_only_against_the_feed(root: str, link: str) -> None:
    """A relative link stays as written unless the feed's own xml:base makes it absolute."""
    body = f"{root}<channel><item><link>/posts/1</link></item></channel></rss>".encode()
    assert parse_document(body, "rss", content_type="application/rss+xml")[0]["link"] == link


def test_feed_body_is_never_taken_for_a_file_name(tmp_path: Path) -> None:
    """A body that happens to be a path is parsed as text, never opened as a file."""
    feed = tmp_path / "feed.xml"
    feed.write_bytes(fixture("rss2.xml"))
    with pytest.raises(FormatError, match="not an RSS or Atom feed"):
        parse_document(str(feed).encode(), "rss")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b'{"items": []}', "not well-formed XML: not well-formed", id="json"),
        pytest.param(fixture("api.xml"), "the root element is <orders>", id="other-xml"),
        pytest.param(
            b"<html><body><p>Moved</p></body></html>", "root element is <html>", id="html"
        ),
        pytest.param(b"", "no feed version and no entries", id="empty"),
    ],
)
def test_body_that_is_not_a_feed_is_refused(body: bytes, fragment: str) -> None:
    """feedparser's leniency stops short of calling a non-feed an empty feed."""
    with pytest.raises(FormatError, match="not an RSS or Atom feed") as caught:
        parse_document(body, "rss")
    assert fragment in str(caught.value)


def test_feed_with_no_items_is_an_empty_list() -> None:
    """A real feed that has no items yet is an empty list, not an error."""
    body = b'<rss version="2.0"><channel><title>New</title></channel></rss>'
    assert parse_document(body, "rss") == []


def test_feed_tolerates_undeclared_html_entities() -> None:
    """A feed that is not quite XML (an HTML entity) is still read, as feedparser allows."""
    body = b'<rss version="2.0"><channel><item><title>a&nbsp;b</title></item></channel></rss>'
    assert parse_document(body, "rss")[0]["title"] == "a\xa0b"


@pytest.mark.parametrize(
    ("content_type", "body", "fmt"),
    [
        ("application/json", b"{}", "json"),
        ("application/problem+json; charset=utf-8", b"{}", "json"),
        ("Application/JSON", b"{}", "json"),
        ("application/x-ndjson", b"{}", "jsonl"),
        ("application/jsonl", b"{}", "jsonl"),
        ("application/json-seq", b"\x1e{}", "jsonl"),
        ("text/csv; header=present", b"a\n", "csv"),
        ("application/rss+xml", b"<rss/>", "rss"),
        ("application/atom+xml", b"<feed/>", "rss"),
        ("application/xml", b"<orders/>", "xml"),
        ("text/xml", b'<?xml version="1.0"?>\n<rss version="2.0"/>', "rss"),
        ("text/xml", b'<feed xmlns="http://www.w3.org/2005/Atom"/>', "rss"),
        ("application/xml", b'<rdf:RDF xmlns:rdf="urn:x"/>', "rss"),
        ("application/soap+xml", b"<Envelope/>", "xml"),
        ("text/xml", b"<orders>", "xml"),
        ("text/xml", b"not xml at all", "xml"),
        ("text/xml", fixture("billion_laughs_feed.xml"), "xml"),
        (None, b"<rss/>", "json"),
        ("", b"{}", "json"),
        ("text/plain", b"{}", "json"),
        ("application/octet-stream", b"{}", "json"),
    ],
)
def test_detect_format(content_type: str | None, body: bytes, fmt: str) -> None:
    """Content-Type picks the format; generic XML is a feed when its root says so."""
    assert detect_format(content_type, body) == fmt


def test_json_is_plain_orjson() -> None:
    """JSON may be any value, not only an object or an array."""
    assert parse_document(b'"ok"', "json") == "ok"
    assert parse_document(b'{"a": [1, 2.5, null]}', "json") == {"a": [1, 2.5, None]}


def test_json_integer_beyond_64_bits_is_refused_not_rounded() -> None:
    """orjson would read such an integer as a float; the body is refused, naming the number."""
    with pytest.raises(FormatError, match=r"the integer 12345678901234567890123 at /0 is beyond"):
        parse_document(b"[12345678901234567890123]", "json")
    with pytest.raises(FormatError, match=r"at / is beyond .*\(line 2\)"):
        parse_document(b'{"a": 1}\n-9223372036854775809\n', "jsonl")
    assert parse_document(b'[18446744073709551615, "123456789012345678901234"]', "json") == [
        18446744073709551615,
        "123456789012345678901234",
    ]


@pytest.mark.parametrize(
    ("body", "fragment", "column"),
    [
        pytest.param(
            b'{"name": "caf\xe9"}', "not UTF-8 (byte 0xe9 at offset 13)", 14, id="latin-1"
        ),
        pytest.param(b'{\n  "name":\n  "caf\xe9"}', "not UTF-8 (byte 0xe9", 7, id="line-3"),
        pytest.param('{"a": 1}'.encode("utf-16"), "the body is UTF-16", 1, id="utf-16"),
        pytest.param(b"", "empty", 1, id="empty"),
    ],
)
def test_json_encoding_problems_are_named(body: bytes, fragment: str, column: int) -> None:
    """A JSON body that is not plain UTF-8 says so, instead of blaming surrogates."""
    with pytest.raises(FormatError, match="not valid JSON") as caught:
        parse_document(body, "json")
    assert fragment in str(caught.value)
    assert caught.value.column == column
    assert caught.value.line == body.count(b"\n") + 1


def test_jsonl_skips_blank_lines_and_record_separators() -> None:
    """Blank lines, CRLF and RFC 7464 record separators are not items."""
    body = b'\xef\xbb\xbf\x1e{"a": 1}\r\n\r\n\x1e{"a": 2}\n   \n'
    assert parse_document(body, "jsonl") == [{"a": 1}, {"a": 2}]


def test_jsonl_empty_body_is_no_items() -> None:
    """An empty JSON Lines body is an empty list."""
    assert parse_document(b"", "jsonl") == []


def test_jsonl_error_column_counts_the_indent() -> None:
    """The column of a JSON Lines error points into the line as written."""
    with pytest.raises(FormatError) as caught:
        parse_document(b'{"a": 1}\n    {"a" 2}\n', "jsonl")
    assert (caught.value.line, caught.value.column) == (2, 10)  # the "2"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.lists(json_values, max_size=6))
def test_jsonl_reads_back_what_was_written(values: list[Any]) -> None:
    """Writing values one per line and parsing gives the same values back."""
    body = b"\n".join(orjson.dumps(value) for value in values)
    assert parse_document(body, "jsonl") == values


@given(
    st.lists(
        st.lists(
            st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00")),
            min_size=3,
            max_size=3,
        ),
        max_size=5,
    )
)
def test_csv_reads_back_what_csv_writer_wrote(rows: list[list[str]]) -> None:
    """Whatever the stdlib writer quotes, the CSV format reads back unchanged."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["id", "name", "note"])
    writer.writerows(rows)
    parsed = parse_document(out.getvalue().encode("utf-8"), "csv")
    assert parsed == [dict(zip(["id", "name", "note"], row, strict=True)) for row in rows]


def test_csv_options_choose_delimiter_and_encoding() -> None:
    """A semicolon-separated Latin-1 export reads with the options set."""
    body = "sku;name\nX1;Crème brûlée\n".encode("latin-1")
    options = FormatOptions(delimiter=";", encoding="latin-1")
    assert parse_document(body, "csv", options=options) == [{"sku": "X1", "name": "Crème brûlée"}]


@pytest.mark.parametrize(
    ("body", "fragment", "line"),
    [
        pytest.param(b"", "no header row", 1, id="empty"),
        pytest.param(b"\nid,name\n", "no header row", 1, id="blank-first-line"),
        pytest.param(b"id,,name\n1,2,3\n", "header column 2 has no name", 1, id="unnamed-column"),
        pytest.param(b"id,name,id\n", "header names 'id' twice (columns 1 and 3)", 1, id="dup"),
        pytest.param(b'id,name\n1,"unterminated\n', "not valid CSV: unexpected end", 2, id="quote"),
        pytest.param(b'id,name\n1,"a"b\n', "not valid CSV: ',' expected after '\"'", 2, id="junk"),
        pytest.param(b"id,name\n1,caf\xe9\n", "not valid utf-8 text: byte 0xe9", 2, id="encoding"),
    ],
)
def test_csv_problems_are_named(body: bytes, fragment: str, line: int) -> None:
    """A CSV body with a bad header, bad quoting or bad bytes says which and where."""
    with pytest.raises(FormatError) as caught:
        parse_document(body, "csv")
    assert fragment in str(caught.value)
    assert caught.value.line == line


def test_csv_short_row_fills_missing_fields_with_null() -> None:
    """A row with fewer fields than the header has null for the rest, not an error."""
    assert parse_document(b"id,name,note\n1,a\n", "csv") == [{"id": "1", "name": "a", "note": None}]


@pytest.mark.parametrize(
    ("body", "document"),
    [
        pytest.param(b"<a>text</a>", {"a": "text"}, id="text-only"),
        pytest.param(b"<a><b/></a>", {"a": {"b": None}}, id="empty-element"),
        pytest.param(b"<a><b>1</b></a>", {"a": {"b": "1"}}, id="single-child-is-not-a-list"),
        pytest.param(b"<a><b>1</b><b>2</b></a>", {"a": {"b": ["1", "2"]}}, id="repeated-is-list"),
        pytest.param(b'<a x="1">t</a>', {"a": {"@x": "1", "#text": "t"}}, id="attr-and-text"),
        pytest.param(
            b'<a xmlns:p="urn:p"><p:b>1</p:b></a>',
            {"a": {"@xmlns:p": "urn:p", "p:b": "1"}},
            id="prefixes-kept",
        ),
    ],
)
def test_xml_conversion_rule(body: bytes, document: Any) -> None:
    """Elements become objects, repeats arrays, attributes @name and mixed text #text."""
    assert parse_document(body, "xml") == document


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"", "no element found", id="empty"),
        pytest.param(b"<a/><b/>", "junk after document element", id="two-roots"),
        pytest.param(b'{"a": 1}', "invalid token", id="json"),
        pytest.param(
            b"  <?xml version='1.0'?><a/>", "XML or text declaration not at start", id="ws"
        ),
    ],
)
def test_xml_problems_are_named(body: bytes, fragment: str) -> None:
    """A body that is not well-formed XML says what expat found and where."""
    with pytest.raises(FormatError, match="not well-formed XML") as caught:
        parse_document(body, "xml")
    assert fragment in str(caught.value)
    assert caught.value.line == 1


@pytest.mark.parametrize(
    ("delimiter", "encoding"),
    [
        (";;", "utf-8"),
        ("", "utf-8"),
        ('"', "utf-8"),
        ("\n", "utf-8"),
        (",", "no-such"),
        (",", "hex"),
    ],
)
def test_options_refuse_what_can_never_work(delimiter: str, encoding: str) -> None:
    """A bad delimiter or an unknown text encoding fails when the options are built."""
    with pytest.raises(ValueError, match=r"delimiter|encoding"):
        FormatOptions(delimiter=delimiter, encoding=encoding)


def test_unknown_format_is_a_caller_error() -> None:
    """A format outside FORMATS is a ValueError naming the choices, not a FormatError."""
    with pytest.raises(ValueError, match="unknown format 'yaml'") as caught:
        parse_document(b"", "yaml")
    assert not isinstance(caught.value, FormatError)
    assert "json, jsonl, csv, xml, rss, auto" in str(caught.value)
    assert "yaml" not in FORMATS


def test_format_error_message_is_built_from_its_fields() -> None:
    """FormatError keeps its fields and writes them into one readable message."""
    error = FormatError("csv", "the row has 3 fields", row=2, line=3)
    assert str(error) == "the row has 3 fields (row 2, line 3)"
    assert (error.fmt, error.problem, error.row, error.line, error.column) == (
        "csv",
        "the row has 3 fields",
        2,
        3,
        None,
    )
    assert isinstance(error, ValueError)
