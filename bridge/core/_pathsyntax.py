"""The JSONPath grammar pollbridge accepts: RFC 9535 segments, read strictly before evaluation.

jsonpath-ng is lenient where RFC 9535 is strict (``$[01]``, ``$.1``, surrounding blanks) and
knows neither non-ASCII member names nor string escapes. This reader checks a path against the
RFC grammar, decodes names, and renders the path again in the form jsonpath-ng reads exactly
(every name quoted), so both evaluators see the same, validated path.

Refused by design, with a message that says so: unions (``$['a','b']``), the ``!`` operator and
function extensions (``length()``, ``match()`` ...) in filters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

MAX_INDEX: Final = 2**53 - 1
"""RFC 9535 integers are within the exact range of a double: -(2**53 - 1)..2**53 - 1."""

_BLANKS: Final = " \t\n\r"
_ESCAPES: Final = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "/": "/", "\\": "\\"}
_FUNCTIONS: Final = "function extensions (length(), count(), match(), search(), value())"

# "=~" (a regular expression match) is jsonpath-ng's, not RFC 9535's; listeners use it
_OPERATORS: Final = ("==", "!=", "=~", "<=", ">=", "<", ">", "&&", "||")
_NUMBER: Final = re.compile(r"-?\d+(?:\.\d+)?([eE][-+]?\d+)?")
_LEADING_ZERO: Final = re.compile(r"-?0\d")

SelectorKind = Literal["name", "wildcard", "index", "slice", "filter"]


class PathSyntaxError(ValueError):
    """The text is not a JSONPath pollbridge accepts; ``limitation`` marks valid RFC 9535."""

    def __init__(self, problem: str, offset: int, *, limitation: bool = False) -> None:
        self.problem = problem
        self.offset = offset
        self.limitation = limitation
        super().__init__(f"{problem} (at offset {offset})")


@dataclass(frozen=True)
class Segment:
    """One step of a path: a child (``.x``, ``[0]``) or a descendant (``..x``) selection.

    ``value`` is the decoded name, the index, the (start, end, step) of a slice, or the filter
    rendered for jsonpath-ng. ``start`` is the segment's offset in the text; ``bracketed`` tells
    ``[*]`` from ``.*``.
    """

    kind: SelectorKind
    value: object
    start: int
    descendant: bool = False
    bracketed: bool = False


def parse_segments(text: str) -> list[Segment]:
    """The segments of ``text``; raise PathSyntaxError for anything outside the dialect."""
    return _Reader(text).path()


def render_for_jsonpath_ng(segments: list[Segment]) -> str:
    """The path in jsonpath-ng's syntax, with every member name quoted and escaped for it."""
    out = ["$"]
    for seg in segments:
        prefix = ".." if seg.descendant else ""
        if seg.kind == "name" and isinstance(seg.value, str):
            out.append(f"{prefix}[{quote_for_jsonpath_ng(seg.value)}]")
        elif seg.kind == "wildcard":
            out.append(f"{prefix}[*]" if seg.bracketed or not prefix else "..*")
        elif seg.kind == "slice" and isinstance(seg.value, tuple):
            parts = ["" if v is None else str(v) for v in seg.value]
            out.append(f"{prefix}[{':'.join(parts)}]")
        elif seg.kind == "filter":
            out.append(f"{prefix}[?{seg.value}]")
        else:
            out.append(f"{prefix}[{seg.value}]")
    return "".join(out)


def quote_for_jsonpath_ng(name: str) -> str:
    """A string literal jsonpath-ng's lexer reads back as exactly ``name``."""
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _name_first(ch: str) -> bool:
    if ch.isascii():
        return ch.isalpha() or ch == "_"
    return ch >= "\x80" and not _surrogate(ch)


def _name_char(ch: str) -> bool:
    # "-" is not RFC 9535; jsonpath-ng has always read $.foo-bar as a name, and configs use it
    return _name_first(ch) or ch in "0123456789-"


def _digit(ch: str) -> bool:
    return len(ch) == 1 and ch in "0123456789"


def _number_start(ch: str) -> bool:
    return _digit(ch) or ch == "-"


def _surrogate(ch: str) -> bool:
    return "\ud800" <= ch <= "\udfff"


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, problem: str, offset: int | None = None) -> PathSyntaxError:
        return PathSyntaxError(problem, self.pos if offset is None else offset)

    def limit(self, what: str, offset: int) -> PathSyntaxError:
        return PathSyntaxError(
            f"{what}: valid RFC 9535, but not supported by pollbridge (a known limitation)",
            offset,
            limitation=True,
        )

    def peek(self, ahead: int = 0) -> str:
        at = self.pos + ahead
        return self.text[at] if at < len(self.text) else ""

    def blanks(self) -> None:
        while self.peek() and self.peek() in _BLANKS:
            self.pos += 1

    def path(self) -> list[Segment]:
        if self.peek() != "$":
            raise self.fail("it must start with '$' (no blank space before it)")
        self.pos = 1
        segments: list[Segment] = []
        while self.pos < len(self.text):
            before = self.pos
            self.blanks()
            if self.pos == len(self.text):
                raise self.fail("blank space after the end of the path", before)
            segments.append(self.segment())
        return segments

    def segment(self) -> Segment:
        start = self.pos
        if self.text.startswith("..", start):
            self.pos += 2
            if self.peek() == "*":
                self.pos += 1
                return Segment("wildcard", None, start, descendant=True)
            if self.peek() == "[":
                kind, value = self.bracketed()
                return Segment(kind, value, start, descendant=True, bracketed=True)
            return Segment("name", self.shorthand(), start, descendant=True)
        if self.peek() == ".":
            self.pos += 1
            if self.peek() == "*":
                self.pos += 1
                return Segment("wildcard", None, start)
            return Segment("name", self.shorthand(), start)
        if self.peek() == "[":
            kind, value = self.bracketed()
            return Segment(kind, value, start, bracketed=True)
        raise self.fail(f"unexpected {self.peek()!r}; a segment starts with '.', '..' or '['")

    def shorthand(self) -> str:
        start = self.pos
        if not _name_first(self.peek()):
            found = repr(self.peek()) if self.peek() else "the end"
            raise self.fail(
                f"a member name after '.' must start with a letter or '_', found {found} "
                "(quote other names: $['1'])"
            )
        while self.peek() and _name_char(self.peek()):
            self.pos += 1
        return self.text[start : self.pos]

    def bracketed(self) -> tuple[SelectorKind, object]:
        self.pos += 1  # [
        self.blanks()
        selector = self.selector()
        self.blanks()
        if self.peek() == ",":
            raise self.limit("unions of selectors (several selectors in one [...])", self.pos)
        if self.peek() != "]":
            found = repr(self.peek()) if self.peek() else "the end"
            raise self.fail(f"expected ']' to close the selector, found {found}")
        self.pos += 1
        return selector

    def selector(self) -> tuple[SelectorKind, object]:
        ch = self.peek()
        if ch in ("'", '"'):
            return "name", self.string()
        if ch == "*":
            self.pos += 1
            return "wildcard", None
        if ch == "?":
            self.pos += 1
            return "filter", self.filter()
        if _number_start(ch) or ch == ":":
            first = None if ch == ":" else self.integer()
            self.blanks()
            if self.peek() != ":":
                return "index", first
            self.pos += 1
            self.blanks()
            end = self.integer() if _number_start(self.peek()) else None
            self.blanks()
            step = None
            if self.peek() == ":":
                self.pos += 1
                self.blanks()
                step = self.integer() if _number_start(self.peek()) else None
            return "slice", (first, end, step)
        found = repr(ch) if ch else "the end"
        raise self.fail(
            f"expected a selector (a quoted name, *, an index, a slice or ?), found {found}"
        )

    def integer(self) -> int:
        start = self.pos
        if self.peek() == "-":
            self.pos += 1
        digits = self.pos
        while _digit(self.peek()):
            self.pos += 1
        raw = self.text[start : self.pos]
        if self.pos == digits:
            raise self.fail("expected digits after '-'")
        if raw == "-0" or (self.text[digits] == "0" and self.pos - digits > 1):
            raise self.fail(f"{raw!r} is not an RFC 9535 integer (no leading zeros, no -0)", start)
        value = int(raw)
        if abs(value) > MAX_INDEX:
            raise self.fail(f"{raw} is outside the RFC 9535 integer range (±(2**53-1))", start)
        return value

    def string(self) -> str:
        quote = self.peek()
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise self.fail("unterminated string", start)
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch < " ":
                raise self.fail(f"raw control character {ch!r} in a string; write it escaped")
            if ch == "\\":
                out.append(self.escape(quote))
                continue
            out.append(ch)
            self.pos += 1

    def escape(self, quote: str) -> str:
        start = self.pos
        code = self.peek(1)
        if code == quote:
            self.pos += 2
            return quote
        if code in _ESCAPES:
            self.pos += 2
            return _ESCAPES[code]
        if code != "u":
            shown = repr("\\" + code) if code else "'\\' at the end"
            raise self.fail(f"invalid escape {shown} in a string", start)
        self.pos += 2
        first = self.hex4(start)
        if 0xDC00 <= first <= 0xDFFF:
            raise self.fail("a low surrogate \\u escape without a high one before it", start)
        if not 0xD800 <= first <= 0xDBFF:
            return chr(first)
        if not self.text.startswith("\\u", self.pos):
            raise self.fail("a high surrogate \\u escape must be followed by a low one", start)
        self.pos += 2
        second = self.hex4(start)
        if not 0xDC00 <= second <= 0xDFFF:
            raise self.fail("a high surrogate \\u escape must be followed by a low one", start)
        return chr(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))

    def hex4(self, start: int) -> int:
        digits = self.text[self.pos : self.pos + 4]
        if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise self.fail("\\u must be followed by four hexadecimal digits", start)
        self.pos += 4
        return int(digits, 16)

    def filter(self) -> str:
        """Read a filter up to its closing ']', checked and rendered again for jsonpath-ng.

        Tokens are joined by single spaces: jsonpath-ng reads spaces and tabs but not line
        breaks, and knows neither exponents in numbers nor the names a filter's queries use.
        """
        tokens: list[tuple[str, str, int]] = []  # (kind, rendered text, offset)
        depth = 0
        while True:
            self.blanks()
            ch, at = self.peek(), self.pos
            if not ch:
                raise self.fail("unterminated filter: expected ']'")
            if ch in "]," and depth == 0:
                break  # a "," is a union after the filter, which bracketed() refuses
            if ch in "'\"":
                tokens.append(("literal", quote_for_jsonpath_ng(self.string()), at))
            elif ch in "@$":
                tokens.append(self.query())
            elif _number_start(ch):
                tokens.append(("literal", self.number(), at))
            elif self.text.startswith(_OPERATORS, at):
                op = next(o for o in _OPERATORS if self.text.startswith(o, at))
                self.pos += len(op)
                tokens.append(("compare" if op not in ("&&", "||") else "logic", op, at))
            elif ch == "!":
                raise self.limit("the '!' (not) operator in filters", at)
            elif ch == "(":
                depth += 1
                self.pos += 1
                tokens.append(("open", ch, at))
            elif ch == ")":
                if depth == 0:
                    raise self.fail("unbalanced ')' in the filter")
                depth -= 1
                self.pos += 1
                tokens.append(("close", ch, at))
            elif _name_first(ch):
                word = self.shorthand()
                self.blanks()
                if self.peek() == "(":
                    raise self.limit(_FUNCTIONS, at)
                if word not in ("true", "false", "null"):
                    raise self.fail(f"unknown word {word!r} in the filter", at)
                tokens.append(("literal", word, at))
            else:
                raise self.fail(f"unexpected {ch!r} in the filter")
        if depth:
            raise self.fail("unbalanced '(' in the filter")
        if not tokens:
            raise self.fail("empty filter: expected an expression after '?'")
        for i, (kind, _, at) in enumerate(tokens):
            compared = (i > 0 and tokens[i - 1][0] == "compare") or (
                i + 1 < len(tokens) and tokens[i + 1][0] == "compare"
            )
            if kind == "literal" and not compared:
                raise self.fail("a literal in a filter must be compared with something", at)
            if kind == "query-multi" and compared:
                raise self.fail(
                    "a query compared in a filter must select at most one value "
                    "(names and indices only)",
                    at,
                )
        return " ".join(text for _, text, _ in tokens)

    def query(self) -> tuple[str, str, int]:
        """A query inside a filter (``@.a``, ``$.b[0]``), rendered with its names quoted."""
        start = self.pos
        root = self.peek()
        self.pos += 1
        segments: list[Segment] = []
        while True:
            before = self.pos
            self.blanks()
            if self.peek() not in (".", "[") or not self.peek():
                self.pos = before
                break
            segments.append(self.segment())
        singular = all(not s.descendant and s.kind in ("name", "index") for s in segments)
        rendered = root + render_for_jsonpath_ng(segments)[1:]
        return ("query" if singular else "query-multi", rendered, start)

    def number(self) -> str:
        """An RFC 9535 number, rendered without an exponent (jsonpath-ng cannot read one)."""
        match = _NUMBER.match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a number")
        raw = match.group(0)
        if _LEADING_ZERO.match(raw):
            raise self.fail(f"{raw!r} is not an RFC 9535 number (no leading zeros)")
        self.pos = match.end()
        if not match.group(1):
            return raw
        return f"{Decimal(raw):f}"
