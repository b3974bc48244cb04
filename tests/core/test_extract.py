"""Extraction: from a decoded response to keyed, hashed items."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core.extract import (
    ExtractionFailed,
    ItemSpec,
    comparable,
    extract_items,
    key_text,
    project,
    select_items,
)
from bridge.core.hashing import hash_value
from bridge.core.paths import compile_path
from bridge.models import ItemKey


def make_spec(
    items: str = "$[*]",
    key: str | list[str] = "$.id",
    ignore: tuple[str, ...] = (),
    fields: tuple[str, ...] = (),
) -> ItemSpec:
    keys = [key] if isinstance(key, str) else key
    return ItemSpec(
        items=compile_path(items),
        key=tuple(compile_path(k) for k in keys),
        ignore=tuple(compile_path(p) for p in ignore),
        fields=tuple(compile_path(p) for p in fields),
    )


@pytest.mark.parametrize(
    ("doc", "items", "expected"),
    [
        ([{"id": 1}, {"id": 2}], "$[*]", [{"id": 1}, {"id": 2}]),
        ({"data": [1, 2]}, "$.data[*]", [1, 2]),
        ({"data": [1, 2]}, "$.data", [1, 2]),
        ({"data": []}, "$.data[*]", []),
        ({"data": []}, "$.data", []),
        ([], "$[*]", []),
        ({"a": [{"b": [1, 2]}, {"b": [3]}]}, "$.a[*].b[*]", [1, 2, 3]),
        ({"data": [{"x": 1}, {"x": 5}]}, "$.data[?(@.x > 2)]", [{"x": 5}]),
        ({"data": [{"x": 1}]}, "$.data[?(@.x > 2)]", []),
        ({"page": {"rows": [7]}}, "$.page.rows", [7]),
        ({"data": [[]]}, "$.data[0][*]", []),
    ],
)
def test_select_items_returns_the_array_elements(doc: Any, items: str, expected: list[Any]) -> None:
    """The items path yields the array's elements; an explicitly empty array yields none."""
    assert select_items(doc, compile_path(items)) == expected


@pytest.mark.parametrize(
    ("doc", "items", "message"),
    [
        ({"other": []}, "$.data[*]", "items path '$.data[*]' matched nothing: '$.data' is not in"),
        ({"data": {}}, "$.data[*]", "'$.data' is an object, expected an array"),
        ({"data": None}, "$.data[*]", "'$.data' is null, expected an array"),
        ({"data": "x"}, "$.data[*]", "'$.data' is a string, expected an array"),
        ({"data": 3}, "$.data[*]", "'$.data' is a number, expected an array"),
        ({"data": True}, "$.data[*]", "'$.data' is a boolean, expected an array"),
        ({"other": []}, "$.data", "items path '$.data' matched nothing in the response"),
        ({"other": []}, "$.data[?(@.x > 1)]", "'$.data' is not in the response"),
    ],
)
def test_select_items_never_mistakes_a_missing_array_for_an_empty_one(
    doc: Any, items: str, message: str
) -> None:
    """A missing or non-array container is an error naming the path, never zero items."""
    with pytest.raises(ExtractionFailed) as info:
        select_items(doc, compile_path(items))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("doc", "key", "expected"),
    [
        ([{"id": "a"}, {"id": "b"}], "$.id", ["a", "b"]),
        ([{"id": 7}], "$.id", ["7"]),
        ([{"id": 1.5}], "$.id", ["1.5"]),
        ([{"meta": {"uid": "u1"}}], "$.meta.uid", ["u1"]),
        ([{"org": "o", "n": 1}], ["$.org", "$.n"], [("o", "1")]),
    ],
)
def test_keys_are_strings_or_tuples_of_strings(
    doc: Any, key: str | list[str], expected: list[ItemKey]
) -> None:
    """Numbers become their JSON text; a composite key becomes a tuple of strings."""
    assert [item.key for item in extract_items(doc, make_spec(key=key))] == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [("abc", "abc"), ("7", "7"), (("o", "1"), '["o","1"]'), (("a/b", 'q"'), '["a/b","q\\""]')],
)
def test_key_text_is_the_string_or_a_json_array(key: ItemKey, expected: str) -> None:
    """A plain key is stored as itself, a composite one as a compact JSON array."""
    assert key_text(key) == expected


@pytest.mark.parametrize(
    ("doc", "spec", "message"),
    [
        ([{"id": 1}, {"name": "x"}], make_spec(), "item #1 has no key at '$.id'"),
        (["scalar"], make_spec(), "item #0 has no key at '$.id'"),
        (
            [{"id": None}],
            make_spec(),
            "item #0: key at '$.id' is null, expected a string or number",
        ),
        ([{"id": True}], make_spec(), "key at '$.id' is a boolean"),
        ([{"id": {"a": 1}}], make_spec(), "key at '$.id' is an object"),
        ([{"id": [1]}], make_spec(), "key at '$.id' is an array"),
        ([{"ids": [1, 2]}], make_spec(key="$.ids[*]"), "key path '$.ids[*]' matched 2 values"),
        (
            [{"id": 1}, {"id": 2}, {"id": 1}],
            make_spec(),
            "key '1' appears twice in one poll (items #0 and #2)",
        ),
        ([{"id": 1}, {"id": "1"}], make_spec(), "key '1' appears twice"),
        (
            [{"a": "x", "b": "y"}, {"a": "x", "b": "y"}],
            make_spec(key=["$.a", "$.b"]),
            """key '["x","y"]' appears twice""",
        ),
        ([{"id": 1, "n": 2**70}], make_spec(), "item #0 (key '1') cannot be hashed"),
        ({"nope": []}, make_spec(items="$.data[*]"), "matched nothing"),
    ],
)
def test_extract_items_fails_loudly(doc: Any, spec: ItemSpec, message: str) -> None:
    """A missing, ambiguous, ill-typed or repeated key, or an unhashable item, is an error."""
    with pytest.raises(ExtractionFailed) as info:
        extract_items(doc, spec)
    assert message in str(info.value)


def test_extract_items_keeps_value_and_hashes_it() -> None:
    """Each item keeps its full value and the canonical hash of that value."""
    doc = {"data": [{"id": "a", "n": 1}, {"id": "b", "n": 2}]}
    items = extract_items(doc, make_spec(items="$.data[*]"))
    assert [(i.key, i.key_text, i.value) for i in items] == [
        ("a", "a", {"id": "a", "n": 1}),
        ("b", "b", {"id": "b", "n": 2}),
    ]
    assert [i.hash for i in items] == [hash_value(v) for v in doc["data"]]


def test_composite_key_text_is_json() -> None:
    """A composite key's stored text is the JSON array of its parts."""
    (item,) = extract_items([{"org": "o", "n": 3}], make_spec(key=["$.org", "$.n"]))
    assert item.key == ("o", "3")
    assert item.key_text == '["o","3"]'


def test_ignored_paths_do_not_count_for_the_hash() -> None:
    """Two items differing only in ignored fields hash alike; the value keeps those fields."""
    spec = make_spec(ignore=("$.updated_at", "$.meta.etag"))
    (one,) = extract_items([{"id": 1, "v": "x", "updated_at": 1, "meta": {"etag": "a"}}], spec)
    (two,) = extract_items([{"id": 1, "v": "x", "updated_at": 2, "meta": {"etag": "b"}}], spec)
    (three,) = extract_items([{"id": 1, "v": "y", "updated_at": 2, "meta": {"etag": "b"}}], spec)
    assert one.hash == two.hash
    assert one.hash != three.hash
    assert one.value["updated_at"] == 1


def test_fields_projection_keeps_only_listed_paths() -> None:
    """With fields set, an item is reduced to those paths before keying and hashing."""
    spec = make_spec(fields=("$.id", "$.a.b"))
    (item,) = extract_items([{"id": 1, "a": {"b": 2, "c": 3}, "noise": 4}], spec)
    assert item.value == {"id": 1, "a": {"b": 2}}
    assert item.hash == hash_value({"id": 1, "a": {"b": 2}})


@pytest.mark.parametrize(
    ("value", "fields", "expected"),
    [
        ({"a": 1, "b": 2}, ["$.a"], {"a": 1}),
        ({"a": {"b": 1, "c": 2}}, ["$.a.b"], {"a": {"b": 1}}),
        ({"a": 1}, ["$.missing"], {}),
        ({"a": 1}, [], {"a": 1}),
        ("scalar", ["$.a"], "scalar"),
        ({"a": [1, 2]}, ["$.a[0]"], {}),
    ],
)
def test_project(value: Any, fields: list[str], expected: Any) -> None:
    """project keeps plain-name paths that exist and skips everything else."""
    assert project(value, [compile_path(f) for f in fields]) == expected


def test_comparable_removes_ignored_paths_without_mutating() -> None:
    """comparable drops ignored paths from a copy; the stored item is untouched."""
    value = {"id": 1, "ts": 2, "meta": {"etag": "x", "k": 1}}
    ignore = [compile_path("$.ts"), compile_path("$.meta.etag")]
    assert comparable(value, ignore) == {"id": 1, "meta": {"k": 1}}
    assert value == {"id": 1, "ts": 2, "meta": {"etag": "x", "k": 1}}


_NOT_SIMPLE_WILDCARDS = ["$..data[*]", "$.*.data[*]", "$.page.*[*]", "$.page..data[*]"]


@pytest.mark.parametrize("items", _NOT_SIMPLE_WILDCARDS)
def test_wildcard_items_paths_beyond_the_fast_path_keep_the_empty_array_rule(items: str) -> None:
    """A path ending in [*] evaluated by jsonpath-ng reads a present empty array as zero items."""
    assert select_items({"page": {"data": []}}, compile_path(items)) == []
    assert select_items({"page": {"data": [1, 2]}}, compile_path(items)) == [1, 2]


@pytest.mark.parametrize("items", _NOT_SIMPLE_WILDCARDS)
def test_wildcard_items_paths_beyond_the_fast_path_want_an_array(items: str) -> None:
    """An object where the array should be fails 'expected an array' rather than giving values."""
    with pytest.raises(ExtractionFailed, match="is an object, expected an array"):
        select_items({"page": {"data": {"a": 1, "b": 2}}}, compile_path(items))


@pytest.mark.parametrize("items", _NOT_SIMPLE_WILDCARDS)
def test_wildcard_items_paths_beyond_the_fast_path_fail_when_nothing_matches(items: str) -> None:
    """When the array's path matches nothing at all, the poll fails: not 'everything deleted'."""
    with pytest.raises(ExtractionFailed, match="matched nothing"):
        select_items({"other": {}}, compile_path(items))
