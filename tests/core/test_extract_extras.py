"""Extraction extras: JSONPath filter expressions in ``items`` and ``fields`` projection."""

from __future__ import annotations

import pytest

from bridge.core.extract import ExtractionFailed, ItemSpec, extract_items, project
from bridge.core.paths import compile_path

DOC = {
    "data": [
        {"id": 1, "status": "paid", "total": 10, "lines": [{"sku": "a"}], "meta": {"v": 1, "w": 2}},
        {"id": 2, "status": "draft", "total": 5, "lines": [], "meta": {"v": 3, "w": 4}},
        {"id": 3, "status": "shipped", "total": 99, "lines": [], "meta": {"v": 5, "w": 6}},
    ]
}


def _spec(items: str = "$.data[*]", fields: tuple[str, ...] = ()) -> ItemSpec:
    return ItemSpec(
        items=compile_path(items),
        key=(compile_path("$.id"),),
        fields=tuple(compile_path(f) for f in fields),
    )


@pytest.mark.parametrize(
    ("items", "keys"),
    [
        ("$.data[?(@.status != 'draft')]", ["1", "3"]),
        ("$.data[?(@.status == 'draft')]", ["2"]),
        ("$.data[?(@.total > 9)]", ["1", "3"]),
        ("$.data[?(@.total > 9 && @.status == 'paid')]", ["1"]),
        ("$.data[?(@.total > 1000)]", []),
    ],
)
def test_items_filter_expressions(items, keys):
    """jsonpath-ng's extended filters select items; filtering everything out is an empty list."""
    assert [i.key_text for i in extract_items(DOC, _spec(items))] == keys


def test_filter_over_a_missing_array_is_an_error():
    """A filter whose array is absent fails (never "everything was deleted")."""
    with pytest.raises(ExtractionFailed, match="matched nothing"):
        extract_items({"other": []}, _spec("$.data[?(@.status != 'draft')]"))


def test_fields_keep_only_the_listed_paths():
    """``fields`` keeps only those paths, nested ones rebuilt, and hashes the smaller item."""
    items = extract_items(DOC, _spec(fields=("$.id", "$.status", "$.meta.v")))
    assert items[0].value == {"id": 1, "status": "paid", "meta": {"v": 1}}
    full = extract_items(DOC, _spec())
    assert items[0].hash != full[0].hash


def test_fields_projection_makes_other_changes_invisible():
    """A change outside the kept fields does not change the item's hash."""
    spec = _spec(fields=("$.id", "$.status"))
    before = extract_items(DOC, spec)
    changed = {"data": [dict(DOC["data"][0], total=11), *DOC["data"][1:]]}
    after = extract_items(changed, spec)
    assert [i.hash for i in before] == [i.hash for i in after]


def test_fields_missing_in_an_item_are_left_out():
    """A kept path an item lacks is simply absent from the projection."""
    assert project({"id": 1}, [compile_path("$.id"), compile_path("$.status")]) == {"id": 1}
    assert project([1, 2], [compile_path("$.id")]) == [1, 2]


def test_key_must_survive_the_projection():
    """The key is read after projection, so it must be one of the kept fields."""
    with pytest.raises(ExtractionFailed, match="no key"):
        extract_items(DOC, _spec(fields=("$.status",)))
