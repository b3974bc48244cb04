"""The pure rules of GraphQL sources and detail fetch: body paths, errors, detail URLs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.bodypath import BodyPathError, parse_body_path, with_body_value
from bridge.core.detail import (
    DetailFailed,
    DetailSpec,
    detail_item,
    detail_url,
    list_hash_refreshes,
    merge_details,
    needs_detail,
    parse_detail_url,
)
from bridge.core.graphql import graphql_body, graphql_error
from bridge.core.hashing import hash_item
from bridge.core.pagination import Page, PageSpec, PaginationFailed, next_page_body
from bridge.core.paths import compile_path
from bridge.models import Item

# -- body paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path", "value", "expected"),
    [
        ({"query": "q", "variables": {"first": 5}}, "variables.after", "c1",
         {"query": "q", "variables": {"first": 5, "after": "c1"}}),
        ({"query": "q", "variables": None}, "variables.after", "c1",
         {"query": "q", "variables": {"after": "c1"}}),
        ({"query": "q"}, "variables.after", 3, {"query": "q", "variables": {"after": 3}}),
        (None, "cursor", "x", {"cursor": "x"}),
        ({"a": {"b": {"c": 1}}}, "a.b.c", 2, {"a": {"b": {"c": 2}}}),
    ],
)  # fmt: skip
def test_with_body_value_sets_the_dotted_member(body, path, value, expected):
    """The value lands at the dotted path; missing or null objects on the way are created."""
    assert with_body_value(body, path, value) == expected


def test_with_body_value_never_changes_the_given_body():
    """The configured body is shared by every poll: setting a cursor copies along the path."""
    body = {"query": "q", "variables": {"first": 5, "filter": {"open": True}}}
    out = with_body_value(body, "variables.after", "c1")
    assert body == {"query": "q", "variables": {"first": 5, "filter": {"open": True}}}
    assert out["variables"] is not body["variables"]


@given(st.lists(st.text(min_size=1).filter(lambda t: "." not in t and t == t.strip()), min_size=1, max_size=4), st.integers())  # fmt: skip
def test_a_set_value_reads_back(names, value):
    """Whatever the names, the value set is the value found by walking them."""
    out = with_body_value({}, ".".join(names), value)
    node = out
    for name in names:
        node = node[name]
    assert node == value


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"variables": 3}, "variables.after", "'variables' is a number, not an object"),
        ({"variables": [1]}, "variables.after", "'variables' is an array"),
        ([1, 2], "after", "needs a JSON object body, got an array"),
        ({}, "a..b", "is not a dotted path"),
        ({}, "", "non-empty dotted path"),
        ({}, " a", "is not a dotted path"),
    ],
)
def test_with_body_value_refuses_what_cannot_hold_the_value(body, path, message):
    """A path through a non-object, or a malformed path, is an error saying which part."""
    with pytest.raises(BodyPathError, match=None) as caught:
        with_body_value(body, path, "x")
    assert message in str(caught.value)


def test_parse_body_path():
    assert parse_body_path("variables.after") == ("variables", "after")


# -- GraphQL errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"data": {"a": 1}}, None),
        ({"data": {"a": 1}, "errors": []}, None),
        ({"data": None, "errors": None}, None),
        ([1, 2], None),
        ({"errors": [{"message": "boom"}]}, "GraphQL error: 'boom'"),
        (
            {"data": None, "errors": [{"message": "no repo", "path": ["repository", 0, "x"]},
                                      {"message": "two"}]},
            "GraphQL error: 'no repo' at path repository.0.x (and 1 more error(s))",
        ),
        ({"errors": [{"path": ["a"]}]}, "GraphQL error: 'None' at path a"),
        ({"errors": ["plain"]}, "GraphQL error: 'plain'"),
        ({"errors": "broken"}, "the response's 'errors' is not an array: 'broken'"),
    ],
)  # fmt: skip
def test_graphql_error_quotes_the_first_message_and_its_path(doc, expected):
    """A non-empty errors array is a failure; an empty or absent one is not."""
    assert graphql_error(doc) == expected


def test_graphql_error_clips_a_huge_message():
    text = graphql_error({"errors": [{"message": "x" * 5000}]})
    assert text is not None and len(text) < 400 and text.endswith("…'")


def test_graphql_body_is_the_standard_shape():
    assert graphql_body("{ a }", {"n": 1}) == {"query": "{ a }", "variables": {"n": 1}}


# -- cursor in the body -------------------------------------------------------------------------

SPEC = PageSpec(
    "cursor",
    cursor=compile_path("$.data.issues.pageInfo.endCursor"),
    has_more=compile_path("$.data.issues.pageInfo.hasNextPage"),
    body_param=("variables", "after"),
)
BODY = {"query": "q", "variables": {"first": 2}}


def _page(more: object, cursor: object) -> Page:
    info = {"hasNextPage": more, "endCursor": cursor}
    return Page("https://api.example.com/graphql", {"data": {"issues": {"pageInfo": info}}})


def test_next_page_body_sends_the_end_cursor_back():
    assert next_page_body(SPEC, _page(True, "Y3Vyc29yOjE="), BODY) == {
        "query": "q",
        "variables": {"first": 2, "after": "Y3Vyc29yOjE="},
    }


@pytest.mark.parametrize(("more", "cursor"), [(False, "c"), (False, None), (None, None)])
def test_next_page_body_stops_when_there_is_no_next_page(more, cursor):
    assert next_page_body(SPEC, _page(more, cursor), BODY) is None


@pytest.mark.parametrize("cursor", [None, ""])
def test_has_next_page_without_a_cursor_fails_rather_than_cutting_the_list(cursor):
    """hasNextPage true with a null endCursor: stopping there would read a partial list."""
    with pytest.raises(PaginationFailed, match="true but there is no cursor"):
        next_page_body(SPEC, _page(True, cursor), BODY)


# -- detail URLs --------------------------------------------------------------------------------


def _entry(value: object, key: str = "1") -> Item:
    return Item(key, key, value, hash_item(value))


@pytest.mark.parametrize(
    ("template", "value", "url"),
    [
        ("https://a.example/orders/{id}", {"id": 7}, "https://a.example/orders/7"),
        ("https://a.example/orders/{id}", {"id": "a/b c?#%"}, "https://a.example/orders/a%2Fb%20c%3F%23%25"),
        ("https://a.example/u/{user.id}/o/{$.n}", {"user": {"id": "u1"}, "n": 2.5}, "https://a.example/u/u1/o/2.5"),
        ("https://a.example/o/{ id }", {"id": 1}, "https://a.example/o/1"),
        ("https://a.example/o/{id}?q={{x}}", {"id": 1}, "https://a.example/o/1?q={x}"),
        ("https://a.example/o?id={$.ids[0]}", {"ids": ["é"]}, "https://a.example/o?id=%C3%A9"),
    ],
)  # fmt: skip
def test_detail_url_fills_placeholders_url_encoded(template, value, url):
    """Each placeholder becomes one percent-encoded value; doubled braces are literal."""
    assert detail_url(parse_detail_url(template), _entry(value)) == url


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({}, "item '1' has no value at '$.id'"),
        ({"id": None}, "is null, expected a non-empty string or a number"),
        ({"id": True}, "is true, expected"),
        ({"id": ""}, 'is "", expected'),
        ({"id": {"a": 1}}, "expected a non-empty string or a number"),
    ],
)
def test_detail_url_refuses_a_missing_or_odd_value(value, message):
    """A placeholder with no usable value fails, naming the item's key and the path."""
    with pytest.raises(DetailFailed) as caught:
        detail_url(parse_detail_url("https://a.example/o/{id}"), _entry(value))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "template",
    ["https://a.example?x={id}", "https://a.example:8443/o/{id}", "http://a.example/{id}/x"],
)
def test_placeholders_after_the_host_are_accepted(template):
    assert [p.text for p in parse_detail_url(template).placeholders] == ["$.id"]


@pytest.mark.parametrize(
    "template",
    [
        "https://{id}.a.example/x",
        "https://a.example{id}/x",
        "https://a.example:{id}/x",
        "https://user:{id}@a.example/x",
        "https://a.example#{id}",
        "{id}",
    ],
)
def test_placeholders_never_choose_the_host(template):
    """List data must not pick the host, port or credentials of a detail request."""
    with pytest.raises(DetailFailed, match="only after the host"):
        parse_detail_url(template)


def test_a_placeholder_matching_several_values_fails():
    template = parse_detail_url("https://a.example/o/{$.ids[*]}")
    with pytest.raises(DetailFailed, match="2 values"):
        detail_url(template, _entry({"ids": [1, 2]}))


# -- which entries are fetched, and what the item is --------------------------------------------


def test_needs_detail_picks_new_and_changed_entries():
    a, b, c = _entry({"id": 1}, "a"), _entry({"id": 2}, "b"), _entry({"id": 3}, "c")
    stored = {"a": "detail-a", "b": "detail-b"}
    listed = {"a": a.hash, "b": "an older list hash"}
    assert [e.key_text for e in needs_detail([a, b, c], stored, listed)] == ["b", "c"]
    assert len(needs_detail([a, b, c], stored, listed, refetch_all=True)) == 3
    # a stored item without a list hash (a row from before detail fetch) is fetched
    assert [e.key_text for e in needs_detail([a], stored, {})] == ["a"]


def test_detail_item_is_the_detail_keyed_like_its_entry():
    spec = DetailSpec(
        parse_detail_url("https://a.example/o/{id}"),
        compile_path("$.order"),
        ignore=(compile_path("$.seen"),),
    )
    entry = _entry({"id": 1, "updated": "x"})
    item = detail_item(entry, {"order": {"total": 5, "seen": 1}}, spec)
    assert (item.key, item.value, item.list_hash) == ("1", {"total": 5, "seen": 1}, entry.hash)
    assert item.hash == hash_item({"total": 5})  # ignore applies to the detail
    with pytest.raises(DetailFailed, match=r"detail\.items '\$\.order' matched nothing"):
        detail_item(entry, {"data": {}}, spec)
    whole = DetailSpec(spec.url, compile_path("$"))
    assert detail_item(entry, ["a list"], whole).value == ["a list"]


def test_merge_and_refresh():
    """Unfetched entries carry their stored hash; a same-detail entry is refreshed silently."""
    a, b = _entry({"id": 1}, "a"), _entry({"id": 2}, "b")
    fetched_b = Item("b", "b", {"full": 2}, "detail-b", b.hash)
    items = merge_details([a, b], {"b": fetched_b}, {"a": "detail-a", "b": "detail-b"})
    assert [(i.key_text, i.hash, i.value) for i in items] == [
        ("a", "detail-a", None),
        ("b", "detail-b", {"full": 2}),
    ]
    assert list_hash_refreshes(items, {"a": a.hash, "b": "old"}, set()) == [fetched_b]
    assert list_hash_refreshes(items, {"a": a.hash, "b": "old"}, {"b"}) == []
    assert list_hash_refreshes(items, {"a": a.hash, "b": b.hash}, set()) == []
