"""JSONPath per RFC 9535: non-ASCII names, escapes, strict selectors and refused features."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core.paths import compile_path

DOC: dict[str, Any] = {
    "données": [{"id": 1}, {"id": 2}],
    "☺": "smile",
    "\n": "newline",
    "😀": "grin",
    "'": "single",
    '"': "double",
    "\\": "backslash",
    "a": {"é": 3},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$.données[*]", DOC["données"]),
        ("$.données[*].id", [1, 2]),
        ("$.☺", ["smile"]),
        ("$['☺']", ["smile"]),
        ("$.a.é", [3]),
    ],
)
@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "slow-path"])
def test_non_ascii_member_names_are_selected(text: str, expected: Any, fast: bool) -> None:
    """Member names outside ASCII work after '.' and in quotes, hand-evaluated or by jsonpath-ng."""
    path = compile_path(text)
    assert path.is_simple()
    assert (path.find(DOC) if fast else [m.value for m in path.expr.find(DOC)]) == expected


def test_non_ascii_names_work_on_the_slow_path_too() -> None:
    """A path only jsonpath-ng evaluates (descendants, filters) accepts non-ASCII names too."""
    assert compile_path("$..é").find(DOC) == [3]
    assert compile_path("$.données[?@.id > 1]").find(DOC) == [{"id": 2}]
    assert compile_path("$.données[?(@['id'] == 1)]").find(DOC) == [{"id": 1}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('$["\\n"]', ["newline"]),
        ("$['\\n']", ["newline"]),
        ("$['\\u263A']", ["smile"]),
        ('$["\\u263a"]', ["smile"]),
        ("$['\\uD83D\\uDE00']", ["grin"]),
        ("$['\\'']", ["single"]),
        ('$["\\""]', ["double"]),
        ("$['\"']", ["double"]),
        ("$['\\\\']", ["backslash"]),
        ("$['\\u00e9']", []),
        ("$.a['\\u00e9']", [3]),
    ],
)
@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "slow-path"])
def test_escapes_in_quoted_names_are_decoded(text: str, expected: Any, fast: bool) -> None:
    """\\n, \\uXXXX and surrogate pairs in a quoted name select the member they spell."""
    path = compile_path(text)
    assert (path.find(DOC) if fast else [m.value for m in path.expr.find(DOC)]) == expected


def test_escapes_in_filter_strings_are_decoded() -> None:
    """A string literal in a filter is decoded the same way as a quoted name."""
    doc = [{"s": "☺"}, {"s": "u263A"}]
    assert compile_path("$[?@.s == '\\u263A']").find(doc) == [{"s": "☺"}]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (" $", "must start with '\\$'"),
        ("$ ", "blank space after the end"),
        ("$.a\t", "blank space after the end"),
        ("$[01]", "leading zeros"),
        ("$[-0]", "no -0"),
        ("$[9007199254740992]", "outside the RFC 9535 integer range"),
        ("$[-9007199254740992]", "outside the RFC 9535 integer range"),
        ("$['a\nb']", "raw control character"),
        ("$['a\x01']", "raw control character"),
        ("$.1", "must start with a letter or '_'"),
        ("$.", "must start with a letter or '_'"),
        ("$['\\x41']", "invalid escape"),
        ("$['\\u12']", "four hexadecimal digits"),
        ("$['\\uD83D']", "followed by a low one"),
        ("$['\\uDE00']", "low surrogate"),
        ("$['a]", "unterminated string"),
        ("$[?@.a == 01]", "no leading zeros"),
        ("$[?true]", "must be compared"),
        ("$[?@[*] == 1]", "select at most one value"),
        ("$[?@.a == True]", "unknown word 'True'"),
    ],
)
def test_invalid_selectors_are_refused_at_compile(text: str, reason: str) -> None:
    """What RFC 9535 calls invalid is refused with a reason, never read as something else."""
    with pytest.raises(ValueError, match=reason) as info:
        compile_path(text)
    assert str(info.value).startswith(f"invalid JSONPath {text!r}")


@pytest.mark.parametrize(
    ("text", "feature"),
    [
        ("$['a','b']", "unions of selectors"),
        ("$[0, 1]", "unions of selectors"),
        ("$[?@.a, 0]", "unions of selectors"),
        ("$[?!@.a]", "'!' \\(not\\) operator"),
        ("$[?!(@.a == 1)]", "'!' \\(not\\) operator"),
        ("$[?length(@.a) > 1]", "function extensions"),
        ("$[?match(@.a, 'x')]", "function extensions"),
    ],
)
def test_unions_negation_and_functions_are_refused_as_a_limitation(text: str, feature: str) -> None:
    """Valid RFC 9535 that pollbridge does not evaluate is refused, saying it is a limitation."""
    with pytest.raises(ValueError, match=feature) as info:
        compile_path(text)
    assert "not supported by pollbridge (a known limitation)" in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$[?@.a != 1]", [{"a": "x"}]), ("$[?(@.a != 'x')]", [{"a": 1}])],
)
def test_not_equal_is_not_the_refused_negation(text: str, expected: Any) -> None:
    """'!=' is a comparison, not the '!' operator: accepted."""
    assert compile_path(text).find([{"a": 1}, {"a": "x"}]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$ .a", [1]),
        ("$[ 'a' ]", [1]),
        ("$\n['a']", [1]),
        ("$.c[?@.a\r\n== 1]", [{"a": 1}]),
        ("$.b[?@ == 1e0]", [1]),
        ("$.b[?@ > 1.5E-1]", [1]),
    ],
)
def test_rfc_blank_space_and_number_forms_are_accepted(text: str, expected: Any) -> None:
    """Blanks between segments and inside brackets, line breaks in filters and exponents work."""
    assert compile_path(text).find({"a": 1, "b": [1], "c": [{"a": 1}, {"a": 2}]}) == expected
