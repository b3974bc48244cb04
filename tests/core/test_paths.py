"""Compiled JSONPath: the hand-written fast path must agree with jsonpath-ng."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.paths import compile_path

DOC: dict[str, Any] = {
    "id": 7,
    "data": [{"id": 1, "x": 1}, {"id": 2, "x": 2}],
    "a.b": "dotted",
    "foo-bar": "hyphen",
    "tags": ["t0", "t1", "t2"],
    "meta": {"page": {"next": "p2"}},
    "empty": [],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$", [DOC]),
        ("$.id", [7]),
        ("$.data[*]", DOC["data"]),
        ("$.data[*].id", [1, 2]),
        ("$.data[1].x", [2]),
        ("$.tags[0]", ["t0"]),
        ("$.tags[9]", []),
        ("$['a.b']", ["dotted"]),
        ('$["a.b"]', ["dotted"]),
        ("$.foo-bar", ["hyphen"]),
        ("$.meta.page.next", ["p2"]),
        ("$.missing", []),
        ("$.id.deeper", []),
        ("$.empty[*]", []),
        ("$..next", ["p2"]),
        ("$.data[?(@.x > 1)].id", [2]),
        ("$.tags[-1]", ["t2"]),
    ],
)
def test_find_returns_matches_in_document_order(text: str, expected: list[Any]) -> None:
    """find() returns every matched value, in document order, for simple and complex paths."""
    assert compile_path(text).find(DOC) == expected


@pytest.mark.parametrize(
    ("text", "simple"),
    [
        ("$.id", True),
        ("$.data[*]", True),
        ("$.data[0].id", True),
        ("$['a.b']", True),
        ("$", True),
        ("$..id", False),
        ("$.data[?(@.x > 1)]", False),
        ("$.tags[-1]", False),
        ("$.*", False),
    ],
)
def test_only_plain_steps_take_the_fast_path(text: str, simple: bool) -> None:
    """Names, indices, quoted names and [*] are evaluated by hand; the rest by jsonpath-ng."""
    assert compile_path(text).is_simple() is simple


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must start with '\\$'"),
        ("id", "must start with '\\$'"),
        ("data[*]", "must start with '\\$'"),
        ("$.data[*", "invalid JSONPath"),
        ("$.[", "invalid JSONPath"),
        ("$[?(@.x >)]", "invalid JSONPath"),
    ],
)
def test_compile_path_rejects_invalid_text(text: str, reason: str) -> None:
    """An invalid path raises ValueError naming the path and the reason."""
    with pytest.raises(ValueError, match=reason) as info:
        compile_path(text)
    assert repr(text.strip()) in str(info.value)


@pytest.mark.parametrize("text", ["  $.id \n", " $", "$ "])
def test_compile_path_refuses_surrounding_blank_space(text: str) -> None:
    """RFC 9535 allows no blank space before '$' or after the last segment: refused, not trimmed."""
    with pytest.raises(ValueError, match="blank space"):
        compile_path(text)


@pytest.mark.parametrize(
    ("text", "container"),
    [
        ("$.data[*]", "$.data"),
        ("$[*]", "$"),
        ("$.meta.page[*]", "$.meta.page"),
        ("$.data[?(@.x > 1)]", "$.data"),
        ("$.data", None),
        ("$.data[0]", None),
        ("$..id", None),
    ],
)
def test_container_names_the_array_a_path_selects_from(text: str, container: str | None) -> None:
    """Paths ending in [*] or a filter report their array's path; others have none."""
    found = compile_path(text).container()
    assert (None if found is None else found.text) == container


def test_container_finds_the_array_itself() -> None:
    """The container path finds the array the items come from, not the items."""
    container = compile_path("$.data[*]").container()
    assert container is not None
    assert container.find(DOC) == [DOC["data"]]


@pytest.mark.parametrize(
    ("text", "doc", "expected"),
    [
        ("$.ts", {"id": 1, "ts": 5}, {"id": 1}),
        ("$.meta.ts", {"meta": {"ts": 1, "k": 2}}, {"meta": {"k": 2}}),
        ("$.missing", {"id": 1}, {"id": 1}),
        ("$.meta.ts", {"meta": "scalar"}, {"meta": "scalar"}),
        ("$.tags[0]", {"tags": ["a", "b"]}, {"tags": ["b"]}),
        ("$..ts", {"ts": 1, "a": {"ts": 2, "k": 3}}, {"a": {"k": 3}}),
        ("$.rows[*].ts", {"rows": [{"ts": 1, "v": 1}, {"ts": 2}]}, {"rows": [{"v": 1}, {}]}),
    ],
)
def test_remove_from_drops_every_match(text: str, doc: Any, expected: Any) -> None:
    """remove_from returns the document without the matched values, leaving the input intact."""
    original = copy.deepcopy(doc)
    assert compile_path(text).remove_from(doc) == expected
    assert doc == original


_NAMES = st.sampled_from(["a", "b", "id", "x-y", "_z"])
_STEPS = st.one_of(
    _NAMES.map(lambda n: f".{n}"),
    _NAMES.map(lambda n: f"['{n}']"),
    st.integers(min_value=0, max_value=2).map(lambda i: f"[{i}]"),
    st.just("[*]"),
)
_SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3)
_DOCS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=12,
)


@given(st.lists(_STEPS, max_size=4), _DOCS)
def test_fast_path_agrees_with_jsonpath_ng(steps: list[str], doc: Any) -> None:
    """For any simple path and document, the hand evaluation equals jsonpath-ng's result."""
    path = compile_path("$" + "".join(steps))
    assert path.is_simple()
    assert path.find(doc) == [m.value for m in path.expr.find(doc)]
