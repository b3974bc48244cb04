"""Next-page decisions: RFC 8288 Link headers, next URLs, cursors, page numbers, offsets."""

from __future__ import annotations

import pytest

from bridge.core.hashing import hash_value
from bridge.core.pagination import (
    Page,
    PageSpec,
    PaginationFailed,
    combine_pages,
    first_page_url,
    next_link,
    next_page_url,
    parse_link_header,
    same_origin,
    with_params,
    without_params,
)
from bridge.core.paths import compile_path
from bridge.models import Item

BASE = "https://api.example.com/v1/items?per_page=2"

LINK_CASES = [
    # (header, expected next target)
    ('<https://api.example.com/x?page=2>; rel="next"', "https://api.example.com/x?page=2"),
    (
        '<https://a.example/x?page=9>; rel="last", <https://a.example/x?page=2>; rel="next"',
        "https://a.example/x?page=2",
    ),
    ("<https://a.example/x?page=2>; rel=next", "https://a.example/x?page=2"),
    ('<https://a.example/x?page=2>; REL="NEXT"', "https://a.example/x?page=2"),
    ('<https://a.example/x?page=2>; rel="prefetch next"', "https://a.example/x?page=2"),
    ('</v1/items?page=3>; rel="next"', "https://api.example.com/v1/items?page=3"),
    ('<?page=3>; rel="next"', "https://api.example.com/v1/items?page=3"),
    # commas inside the URI and inside a quoted parameter do not split links
    (
        '<https://a.example/x?ids=1,2>; title="a, b"; rel="next"',
        "https://a.example/x?ids=1,2",
    ),
    ('<https://a.example/p>; rel="prev", <https://a.example/n>; rel="next"', "https://a.example/n"),
    ('<https://a.example/x>; rel="last"', None),
    ("", None),
    ("garbage, more garbage", None),
    ('<https://a.example/n>; rel="next"; rel="prev"', "https://a.example/n"),
    ('<https://a.example/unterminated; rel="next"', None),
]


@pytest.mark.parametrize(("header", "expected"), LINK_CASES)
def test_next_link_from_link_header(header, expected):
    """The rel="next" target is found whatever the order, quoting and case of the header."""
    assert next_link([header], BASE) == expected


def test_link_header_lines_are_all_searched():
    """A response may carry several Link header lines; next may be on any of them."""
    assert next_link(
        ['<https://a.example/1>; rel="prev"', '<https://a.example/3>; rel="next"'], BASE
    ) == ("https://a.example/3")


def test_parse_link_header_keeps_params():
    """Every link-value is parsed with its parameters; the first occurrence of one wins."""
    links = parse_link_header(
        '<https://a.example/2>; rel="next"; title="Page \\"2\\"", <https://a.example/9>; rel=last',
        BASE,
    )
    assert [link.target for link in links] == ["https://a.example/2", "https://a.example/9"]
    assert links[0].params["title"] == 'Page "2"'
    assert links[1].rels == frozenset({"last"})


def test_with_params_keeps_the_rest_of_the_query_verbatim():
    """Setting a parameter replaces its old value and leaves other pairs byte for byte."""
    url = "https://a.example/x?sig=a%2Bb&page=1&q=a+b"
    assert with_params(url, {"page": 2}) == "https://a.example/x?sig=a%2Bb&q=a+b&page=2"
    assert with_params("https://a.example/x", {"starting_after": "ob j"}) == (
        "https://a.example/x?starting_after=ob%20j"
    )
    assert with_params(url, {}) == url
    assert with_params("https://a.example/x", {"flag": True}) == "https://a.example/x?flag=true"


def _page(doc, url="https://a.example/x", items="$[*]", links=()):
    return Page(url, doc, links, compile_path(items))


def test_no_spec_means_a_single_page():
    """A source without [sources.paginate] has exactly one page."""
    assert next_page_url(None, _page([1, 2], links=['<https://a.example/2>; rel="next"'])) is None
    assert first_page_url(None, BASE) == BASE


def test_next_url_from_body_resolves_relative_urls():
    """kind = "next_url": the body's URL, relative ones resolved against the page's URL."""
    spec = PageSpec("next_url", next=compile_path("$.links.next"))
    page = Page(
        "https://a.example/v1/x?page=1",
        {"data": [], "links": {"next": "/v1/x?page=2"}},
        response_url="https://b.example/v2/x",
    )
    assert next_page_url(spec, page) == "https://b.example/v1/x?page=2"
    for last in ({"links": {"next": None}}, {"links": {"next": ""}}, {"links": {}}, {}):
        assert next_page_url(spec, _page(last)) is None
    with pytest.raises(PaginationFailed, match="not a string"):
        next_page_url(spec, _page({"links": {"next": 5}}))


def test_cursor_from_body():
    """kind = "cursor" with ``cursor``: sent as ``param``; empty, null or missing ends the list."""
    spec = PageSpec("cursor", cursor=compile_path("$.next_cursor"), param="cursor")
    url = "https://a.example/x?limit=2&cursor=old"
    assert next_page_url(spec, _page({"next_cursor": "abc"}, url)) == (
        "https://a.example/x?limit=2&cursor=abc"
    )
    assert next_page_url(spec, _page({"next_cursor": 42}, url)).endswith("cursor=42")
    for last in ({"next_cursor": None}, {"next_cursor": ""}, {}):
        assert next_page_url(spec, _page(last, url)) is None


def test_stripe_cursor_from_last_item_and_has_more():
    """Stripe style: starting_after = the last item's id while has_more is true."""
    spec = PageSpec(
        "cursor",
        cursor_from_last_item=compile_path("$.id"),
        has_more=compile_path("$.has_more"),
        param="starting_after",
    )
    doc = {"data": [{"id": "ob_1"}, {"id": "ob_2"}], "has_more": True}
    page = _page(doc, "https://a.example/v1/x?limit=2", "$.data[*]")
    assert next_page_url(spec, page) == "https://a.example/v1/x?limit=2&starting_after=ob_2"
    assert next_page_url(spec, _page({**doc, "has_more": False}, items="$.data[*]")) is None
    assert next_page_url(spec, _page({"data": doc["data"]}, items="$.data[*]")) is None
    with pytest.raises(PaginationFailed, match="no items"):
        next_page_url(spec, _page({"data": [], "has_more": True}, items="$.data[*]"))
    with pytest.raises(PaginationFailed, match="not a boolean"):
        next_page_url(spec, _page({**doc, "has_more": "yes"}, items="$.data[*]"))


def test_cursor_from_last_item_ignores_the_items_filter():
    """The cursor comes from the page's last raw item, even one the items filter drops."""
    spec = PageSpec(
        "cursor",
        cursor_from_last_item=compile_path("$.id"),
        has_more=compile_path("$.has_more"),
        param="starting_after",
    )
    doc = {"data": [{"id": "a", "s": "ok"}, {"id": "b", "s": "draft"}], "has_more": True}
    page = _page(doc, "https://a.example/x", "$.data[?(@.s != 'draft')]")
    assert next_page_url(spec, page) == "https://a.example/x?starting_after=b"


def test_page_numbers_stop_on_a_short_or_empty_page():
    """kind = "page": the number goes up by one; a page shorter than ``size`` is the last."""
    spec = PageSpec("page", param="page", start=1, size_param="per_page", size=2)
    first = first_page_url(spec, "https://a.example/x?state=open")
    assert first == "https://a.example/x?state=open&page=1&per_page=2"
    assert next_page_url(spec, _page([1, 2], first)) == (
        "https://a.example/x?state=open&per_page=2&page=2"
    )
    assert next_page_url(spec, _page([1], first)) is None
    assert next_page_url(spec, _page([], first)) is None
    unsized = PageSpec("page", param="p", start=0)
    assert first_page_url(unsized, "https://a.example/x") == "https://a.example/x?p=0"
    assert (
        next_page_url(unsized, _page([1], "https://a.example/x?p=0")) == "https://a.example/x?p=1"
    )
    assert next_page_url(unsized, _page([], "https://a.example/x?p=1")) is None


def test_page_size_counts_items_before_the_filter():
    """A filter that drops items must not make a full page look like the last one."""
    spec = PageSpec("page", param="page", start=1, size=2)
    page = _page(
        {"data": [{"s": "draft"}, {"s": "ok"}]},
        "https://a.example/x?page=1",
        "$.data[?(@.s != 'draft')]",
    )
    assert next_page_url(spec, page) == "https://a.example/x?page=2"


def test_offsets_advance_by_the_page_length():
    """kind = "offset": the offset moves by the items received; short or empty pages end it."""
    spec = PageSpec("offset", param="offset", start=0, size_param="limit", size=3)
    first = first_page_url(spec, "https://a.example/x")
    assert first == "https://a.example/x?offset=0&limit=3"
    assert next_page_url(spec, _page({"r": [1, 2, 3]}, first, "$.r[*]")) == (
        "https://a.example/x?limit=3&offset=3"
    )
    assert next_page_url(spec, _page({"r": [1, 2]}, first, "$.r[*]")) is None
    with pytest.raises(PaginationFailed, match="not a number"):
        next_page_url(spec, _page({"r": [1, 2, 3]}, "https://a.example/x?offset=x", "$.r[*]"))


def _item(key: str) -> Item:
    return Item(key, key, {"id": key}, hash_value({"id": key}))


def test_combine_pages_keeps_order_and_refuses_repeated_keys():
    """Pages are concatenated in order; a key on two pages fails (the list moved while paging)."""
    combined = combine_pages([[_item("a"), _item("b")], [_item("c")]])
    assert [i.key_text for i in combined] == ["a", "b", "c"]
    with pytest.raises(PaginationFailed, match="page 1 and page 2"):
        combine_pages([[_item("a"), _item("b")], [_item("b")]])


def test_same_origin():
    """Scheme, host and port must all match for a next page to be followed."""
    assert same_origin("https://a.example/x", "https://a.example/y?z=1")
    assert not same_origin("https://a.example/x", "http://a.example/x")
    assert not same_origin("https://a.example/x", "https://b.example/x")
    assert not same_origin("https://a.example/x", "https://a.example:8443/x")


def test_without_params():
    """Removing a parameter keeps the rest of the query byte for byte."""
    assert without_params("https://a.example/x?page=2&key=s%20t&b=1", ["key"]) == (
        "https://a.example/x?page=2&b=1"
    )
    assert without_params("https://a.example/x?key=1", ["key"]) == "https://a.example/x"
    assert without_params("https://a.example/x?a=1", ["key"]) == "https://a.example/x?a=1"
