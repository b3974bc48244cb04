"""Turn a fetched HTTP body into a JSON-like document: JSON, JSON Lines, CSV, XML or a feed.

Pure: bytes in, plain Python values out, no network and no file access. XML is parsed with
entity declarations refused, so a billion-laughs document fails fast instead of expanding.

JSON goes through ``orjson.loads``, which reads an integer too large for 64 bits as a float; a
body holding such a literal (``12345678901234567890123``) is refused with a FormatError naming
it (bridge/core/decode.py), never silently rounded. Keys and amounts that large should be strings.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import threading
import xml.sax
import xml.sax.handler
import xml.sax.xmlreader
from collections.abc import Sequence
from dataclasses import dataclass
from html.entities import html5, name2codepoint
from typing import Any, Final
from xml.parsers import expat

import orjson
import xmltodict  # type: ignore[import-untyped]
from defusedxml.common import EntitiesForbidden  # type: ignore[import-untyped]
from defusedxml.expatreader import create_parser  # type: ignore[import-untyped]

from bridge.core.decode import oversized_integer
from bridge.core.hashing import hash_value

FORMATS: Final = ("json", "jsonl", "csv", "xml", "rss", "auto")

_JSONL_TYPES: Final = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
        "application/json-seq",
    }
)
_JSON_TYPES: Final = frozenset({"application/json", "text/json"})
_CSV_TYPES: Final = frozenset({"text/csv", "application/csv"})
_FEED_TYPES: Final = frozenset({"application/rss+xml", "application/atom+xml"})
_XML_TYPES: Final = frozenset({"application/xml", "text/xml"})
_FEED_ROOTS: Final = frozenset({"rss", "feed", "RDF"})

# JSON text sequences (RFC 7464) put a record separator before each text.
_JSONL_BLANKS: Final = b" \t\r\x1e"
_UTF16_BOMS: Final = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# XML keywords are case-sensitive; these are all the encodings a feed may start in unannounced
_ENTITY_MARKERS: Final = tuple(
    "<!ENTITY".encode(encoding)
    for encoding in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
)


class FormatError(ValueError):
    """The body is not a document of the expected format; the message says what and where.

    ``line`` and ``column`` count from 1; ``row`` is the CSV data row, counting from 1 after
    the header.
    """

    def __init__(
        self,
        fmt: str,
        problem: str,
        *,
        line: int | None = None,
        column: int | None = None,
        row: int | None = None,
    ) -> None:
        self.fmt = fmt
        self.problem = problem
        self.line = line
        self.column = column
        self.row = row
        where = []
        if row is not None:
            where.append(f"row {row}")
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column}")
        super().__init__(f"{problem} ({', '.join(where)})" if where else problem)


@dataclass(frozen=True)
class FormatOptions:
    """How to read a CSV body: its field delimiter and its text encoding.

    JSON and JSON Lines are UTF-8 by definition; XML and feeds name their own encoding.
    Raises ValueError at construction for a delimiter or encoding that can never work.
    """

    delimiter: str = ","
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ValueError(
                f"delimiter must be one character other than a quote or a line break, "
                f"got {self.delimiter!r}"
            )
        try:
            b"\0".decode(self.encoding)  # empty bytes would decode without a lookup
        except LookupError:
            raise ValueError(f"unknown text encoding {self.encoding!r}") from None
        except UnicodeDecodeError:
            pass  # a real text encoding, such as UTF-16, that needs more than one byte


_DEFAULT_OPTIONS: Final = FormatOptions()


def detect_format(content_type: str | None, body: bytes) -> str:
    """The format ``auto`` resolves to for this Content-Type, never ``auto`` itself.

    Generic XML types are told apart from feeds by the root element (``rss``, ``feed`` or
    ``rdf:RDF``); anything unknown or missing is taken to be JSON.
    """
    media_type = _media_type(content_type)
    if media_type in _JSONL_TYPES:
        return "jsonl"
    if media_type in _JSON_TYPES or media_type.endswith("+json"):
        return "json"
    if media_type in _CSV_TYPES:
        return "csv"
    if media_type in _FEED_TYPES:
        return "rss"
    if media_type in _XML_TYPES or media_type.endswith("+xml"):
        try:
            root = _find_root(body, "xml")
        except FormatError:
            return "xml"  # parsing it as XML reports the problem
        return "rss" if root.rpartition(":")[2] in _FEED_ROOTS else "xml"
    return "json"


def parse_document(
    body: bytes,
    fmt: str,
    *,
    content_type: str | None = None,
    options: FormatOptions = _DEFAULT_OPTIONS,
) -> Any:
    """Parse ``body`` as ``fmt`` (one of FORMATS) into dicts, lists and scalars.

    json gives whatever the document holds; jsonl, csv and rss give a list; xml gives a dict
    with the root element as its one key. Raises FormatError when the body does not parse.
    """
    if fmt == "json":
        # RFC 8259 lets a parser skip a UTF-8 byte order mark, and some APIs send one
        body = body.removeprefix(codecs.BOM_UTF8)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            problem, line, column = _json_problem(body, exc)
            raise FormatError("json", problem, line=line, column=column) from exc
        inexact = oversized_integer(body)
        if inexact:
            raise FormatError("json", inexact)
        return doc
    if fmt == "auto":
        detected = detect_format(content_type, body)
        return parse_document(body, detected, content_type=content_type, options=options)
    if fmt == "jsonl":
        return _parse_jsonl(body)
    if fmt == "csv":
        return _parse_csv(body, options)
    if fmt == "xml":
        return _parse_xml(body, content_type)
    if fmt == "rss":
        return _parse_feed(body, content_type)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip().lower()


def _json_problem(text: bytes, exc: orjson.JSONDecodeError) -> tuple[str, int, int]:
    """What is wrong with one JSON text, and the line and column where."""
    if text.startswith(_UTF16_BOMS):
        return "not valid JSON: the body is UTF-16 (it starts with a UTF-16 byte order mark)", 1, 1
    if "UTF-8" in exc.msg:
        # orjson blames "surrogates" for any undecodable byte; name the byte instead
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as bad:
            line_start = text.rfind(b"\n", 0, bad.start) + 1
            return (
                f"not valid JSON: the body is not UTF-8 (byte 0x{text[bad.start]:02x} "
                f"at offset {bad.start})",
                text.count(b"\n", 0, bad.start) + 1,
                bad.start - line_start + 1,
            )
    return f"not valid JSON: {exc.msg}", exc.lineno, exc.colno


def _parse_jsonl(body: bytes) -> list[Any]:
    items = []
    for number, raw in enumerate(body.removeprefix(codecs.BOM_UTF8).split(b"\n"), start=1):
        text = raw.strip(_JSONL_BLANKS)
        if not text:
            continue
        try:
            items.append(orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            problem, _, column = _json_problem(text, exc)
            indent = len(raw) - len(raw.lstrip(_JSONL_BLANKS))
            raise FormatError("jsonl", problem, line=number, column=indent + column) from exc
        inexact = oversized_integer(text)
        if inexact:
            raise FormatError("jsonl", inexact, line=number)
    return items


def _parse_csv(body: bytes, options: FormatOptions) -> list[dict[str, Any]]:
    try:
        text = body.decode(options.encoding)
    except UnicodeDecodeError as bad:
        raise FormatError(
            "csv",
            f"not valid {options.encoding} text: byte 0x{body[bad.start]:02x} at offset "
            f"{bad.start} cannot be decoded",
            line=body.count(b"\n", 0, bad.start) + 1,
        ) from bad
    _allow_csv_fields_of(len(text))
    reader = csv.DictReader(
        io.StringIO(text.removeprefix("\ufeff"), newline=""),
        delimiter=options.delimiter,
        strict=True,
    )
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise FormatError("csv", f"not valid CSV: {exc}", line=reader.reader.line_num) from exc
    if not header:
        raise FormatError("csv", "the CSV has no header row", line=1)
    _check_csv_header(header, reader.reader.line_num)
    rows: list[dict[str, Any]] = []
    try:
        for row in reader:
            if None in row:
                raise FormatError(
                    "csv",
                    f"the row has {len(header) + len(row[None])} fields but the header has {len(header)}",
                    row=len(rows) + 1,
                    line=reader.reader.line_num,
                )
            rows.append(row)
    except csv.Error as exc:
        raise FormatError(
            "csv", f"not valid CSV: {exc}", row=len(rows) + 1, line=reader.reader.line_num
        ) from exc
    return rows


_CSV_LIMIT_LOCK: Final = threading.Lock()


def _allow_csv_fields_of(length: int) -> None:
    """Raise the csv module's field limit (131,072 characters by default) to ``length``.

    The limit is one setting for the whole process, so it only ever grows, under a lock, and
    polls parsing in other threads keep a limit at least as large as they need. A field can
    never be longer than its body, and the body is already bounded by the source's max_bytes.
    """
    with _CSV_LIMIT_LOCK:
        if csv.field_size_limit() < length:
            csv.field_size_limit(length)


def _check_csv_header(header: Sequence[str], line: int) -> None:
    seen: dict[str, int] = {}
    for column, name in enumerate(header, start=1):
        if not name.strip():
            raise FormatError("csv", f"header column {column} has no name", line=line)
        if name in seen:
            # DictReader would keep only the last of the two values
            raise FormatError(
                "csv",
                f"header names {name!r} twice (columns {seen[name]} and {column})",
                line=line,
            )
        seen[name] = column


class _SkippedEntity(Exception):
    def __init__(self, name: str, line: int, column: int) -> None:
        super().__init__(name)
        self.name = name
        self.line = line
        self.column = column


class _StrictExpat:
    """The expat module as xmltodict uses it, with parsers that refuse a skipped entity.

    expat skips a reference to an entity it has not seen declared when the document names an
    external DTD (which is never read), and xmltodict would drop it without a word.
    """

    @staticmethod
    def ParserCreate(*args: Any, **kwargs: Any) -> Any:  # the name xmltodict calls
        parser = expat.ParserCreate(*args, **kwargs)

        def skipped(name: str, _is_parameter: bool) -> None:
            raise _SkippedEntity(name, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1)

        parser.SkippedEntityHandler = skipped
        return parser


def _parse_xml(body: bytes, content_type: str | None = None) -> dict[str, Any]:
    try:
        _find_root(body, "xml")
    except FormatError as exc:
        if not isinstance(exc.__cause__, EntitiesForbidden):
            # unreadable as XML (an encoding expat lacks, such as cp037): say so if it also
            # declares entities, the reason that matters
            _refuse_declarations(body, content_type, "xml")
        raise
    try:
        document: dict[str, Any] = xmltodict.parse(body, expat=_StrictExpat, disable_entities=True)
    except _SkippedEntity as exc:
        raise FormatError(
            "xml",
            f"undefined entity &{exc.name}; (an external DTD is never read, so its entities "
            "are unknown)",
            line=exc.line,
            column=exc.column,
        ) from exc
    except expat.ExpatError as exc:
        raise FormatError(
            "xml",
            f"not well-formed XML: {expat.ErrorString(exc.code)}",
            line=exc.lineno,
            column=exc.offset + 1,
        ) from exc
    return document


class _RootFound(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _RootFinder(xml.sax.handler.ContentHandler):
    def startElement(self, name: str, attrs: Any) -> None:
        raise _RootFound(name)


def _find_root(body: bytes, fmt: str) -> str:
    """The root element's name, reading only the prolog before it.

    Entities can only be declared in the prolog, so refusing them there keeps the whole
    document free of entity expansion. Raises FormatError for a declaration or bad XML.
    """
    parser = create_parser(forbid_dtd=False, forbid_entities=True, forbid_external=False)
    # never fetch an external DTD or entity; the stdlib default, stated so it cannot drift
    parser.setFeature(xml.sax.handler.feature_external_ges, False)
    parser.setContentHandler(_RootFinder())
    source = xml.sax.xmlreader.InputSource()
    source.setByteStream(io.BytesIO(body))
    try:
        parser.parse(source)
    except _RootFound as found:
        return found.name
    except EntitiesForbidden as exc:
        raise FormatError(
            fmt,
            f"XML entity declarations are refused for safety (the document declares {exc.name!r})",
            line=parser.getLineNumber(),
        ) from exc
    except xml.sax.SAXParseException as exc:
        raise FormatError(
            fmt,
            f"not well-formed XML: {exc.getMessage()}",
            line=exc.getLineNumber(),
            column=_sax_column(exc),
        ) from exc
    except (ValueError, LookupError) as exc:
        # expat reads UTF-8, UTF-16 and single-byte encodings only; Shift_JIS and the like fail
        raise FormatError(fmt, f"cannot read the encoding the XML declares: {exc}") from exc
    raise FormatError(fmt, "not well-formed XML: no root element")


def _sax_column(exc: xml.sax.SAXParseException) -> int | None:
    column = exc.getColumnNumber()  # counts from 0, like expat's
    return None if column is None else column + 1


def _parse_feed(body: bytes, content_type: str | None) -> list[dict[str, Any]]:
    root = None
    try:
        root = _find_root(body, "rss")
    except FormatError as exc:
        if isinstance(exc.__cause__, EntitiesForbidden):
            raise
    # feedparser reads broken feeds leniently, in whichever encoding it settles on: refuse
    # declarations in every encoding it may pick, and references to entities nobody defines
    text = _check_feed_entities(body, content_type)
    # A file-like object: given bytes, feedparser would first try them as a file name.
    import feedparser  # type: ignore[import-untyped]

    parsed = feedparser.parse(
        io.BytesIO(body),
        response_headers={"content-type": content_type} if content_type else None,
        resolve_relative_uris=True,
        sanitize_html=True,
    )
    entries = parsed["entries"]
    if entries:
        return [_feed_item(entry) for entry in entries]
    error = parsed.get("bozo_exception")
    if (
        isinstance(error, xml.sax.SAXParseException)
        and error.getMessage() == "undefined entity"
        and parsed.get("version")
        and text is not None
    ):
        return []  # an HTML named entity (the only kind left), read as in items
    if isinstance(error, xml.sax.SAXParseException):
        # feedparser counts lines in its re-encoded copy; find the error in the body itself
        try:
            _parse_xml(body)
        except FormatError as exc:
            raise FormatError(
                "rss", f"not an RSS or Atom feed: {exc.problem}", line=exc.line, column=exc.column
            ) from error
        raise FormatError(
            "rss", f"not an RSS or Atom feed: not well-formed XML: {error.getMessage()}"
        ) from error
    if not parsed.get("version"):
        found = f"the root element is <{root}>" if root else "no feed version and no entries"
        raise FormatError("rss", f"not an RSS or Atom feed: {found}")
    return []


def _feed_item(entry: dict[str, Any]) -> dict[str, Any]:
    # dict.get, because FeedParserDict.get("updated") warns and falls back to "published".
    # feedparser copies a guid or Atom id into "link" when there is no <link>: only a real
    # <link> element (which "links" lists) is the item's link.
    link = dict.get(entry, "link") if dict.get(entry, "links") else None
    item = {
        "id": dict.get(entry, "id") or link,
        "title": dict.get(entry, "title"),
        "link": link,
        "published": _feed_time(entry, "published"),
        "updated": _feed_time(entry, "updated"),
        "summary": dict.get(entry, "summary"),
        "author": dict.get(entry, "author"),
        "categories": [
            dict.get(tag, "term") for tag in dict.get(entry, "tags") or [] if dict.get(tag, "term")
        ],
    }
    if not item["id"]:
        item["id"] = derived_feed_id(item)
    return item


DERIVED_ID_FIELDS: Final = ("title", "published", "updated", "summary")
"""What keys a feed entry that has no guid, id or link: its content, as feed readers do."""


def derived_feed_id(item: dict[str, Any]) -> str:
    """``derived:`` and the hash of the entry's DERIVED_ID_FIELDS, for an entry without an id.

    Equal fields give an equal id, so two entries alike in all of them are a repeated key.
    """
    return "derived:" + hash_value({name: item[name] for name in DERIVED_ID_FIELDS})


_XML_ENTITIES: Final = frozenset({"amp", "lt", "gt", "quot", "apos"})
_ENTITY_REFERENCE: Final = re.compile(r"&([^\W\d][\w.:-]*);")
_NOT_MARKUP: Final = re.compile(r"<!\[CDATA\[.*?\]\]>|<!--.*?-->", re.DOTALL)
_DECLARED_ENCODING: Final = re.compile(r"""<\?xml[^>]*?encoding\s*=\s*["']([^"']+)["']""")
# The first four bytes of "<?xml" in encodings that are not ASCII-compatible (XML 1.0, F.1)
_SNIFFED: Final = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (b"\x4c\x6f\xa7\x94", "cp037"),
    (b"\x00\x00\x00\x3c", "utf-32-be"),
    (b"\x3c\x00\x00\x00", "utf-32-le"),
    (b"\x00\x3c\x00\x3f", "utf-16-be"),
    (b"\x3c\x00\x3f\x00", "utf-16-le"),
)


# Stateless encodings in which an ASCII character is always that byte and no other sequence
# decodes to one (unlike UTF-7 or ISO-2022-JP, which must be decoded to be checked)
_ASCII_BYTES_ENCODINGS: Final = frozenset({"utf-8", "cp1252", "iso8859-1", "iso8859-2", "ascii"})


def _feed_encodings(body: bytes, content_type: str | None) -> list[str]:
    """Every encoding feedparser may decode ``body`` in, most likely first.

    It tries the Content-Type charset, the declared encoding, the one sniffed from the first
    bytes, then UTF-8 and windows-1252 (and ISO-8859-2, ASCII-compatible like them).
    """
    sniffed = next((name for prefix, name in _SNIFFED if body.startswith(prefix)), None)
    head = body[:1024].decode(sniffed or "latin-1", errors="replace").lstrip("\ufeff")
    declared = _DECLARED_ENCODING.match(head)
    charset = None
    for param in (content_type or "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
    found = [charset, declared.group(1) if declared else None, sniffed, "utf-8", "windows-1252"]
    out: list[str] = []
    for candidate in found:
        if not candidate:
            continue
        label = "gb18030" if candidate.lower() == "gb2312" else candidate  # as feedparser does
        try:
            canonical = codecs.lookup(label).name
        except LookupError:
            continue  # no reader can decode it either
        if canonical not in out:
            out.append(canonical)
    return out


def _refuse_declarations(body: bytes, content_type: str | None, fmt: str) -> str | None:
    """Refuse an entity declaration in any encoding a reader may pick; the text, if it decodes."""
    text = None
    for encoding in _feed_encodings(body, content_type):
        if text is not None and encoding in _ASCII_BYTES_ENCODINGS:
            continue  # the byte scan below sees "<!ENTITY" in these as it is
        decoded = body.decode(encoding, errors="replace")
        if "<!ENTITY" in decoded:
            raise FormatError(
                fmt, f"XML entity declarations are refused for safety (read as {encoding})"
            )
        if text is None and "\ufffd" not in decoded:
            text = decoded
    if any(marker in body for marker in _ENTITY_MARKERS):
        raise FormatError(fmt, "XML entity declarations are refused for safety")
    return text


def _check_feed_entities(body: bytes, content_type: str | None) -> str | None:
    """Refuse entity declarations and undefined entity references; the text, if it decodes.

    A reference is allowed when it names an XML or an HTML entity (``&nbsp;``): feeds use
    those often, and they are references, not declarations.
    """
    text = _refuse_declarations(body, content_type, "rss")
    if text is None:
        return None
    for match in _ENTITY_REFERENCE.finditer(_NOT_MARKUP.sub("", text)):
        name = match.group(1)
        if name not in _XML_ENTITIES and name not in name2codepoint and f"{name};" not in html5:
            line = text.count("\n", 0, match.start()) + 1
            raise FormatError(
                "rss",
                f"undefined entity &{name}; (neither an XML nor an HTML entity)",
                line=line,
            )
    return text


def _feed_time(entry: dict[str, Any], field: str) -> str | None:
    """RFC 3339 in UTC when feedparser could read the date, else the raw text, else None."""
    parsed = dict.get(entry, f"{field}_parsed")
    if parsed is not None:
        return (
            f"{parsed.tm_year:04d}-{parsed.tm_mon:02d}-{parsed.tm_mday:02d}T"
            f"{parsed.tm_hour:02d}:{parsed.tm_min:02d}:{parsed.tm_sec:02d}Z"
        )
    raw: str | None = dict.get(entry, field) or None
    return raw
