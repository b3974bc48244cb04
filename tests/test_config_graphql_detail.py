"""Configuration of [sources.graphql], paginate.body_param and [sources.detail]."""

from __future__ import annotations

import pytest

from bridge.config import iter_summary, load_config, summary_doc
from bridge.errors import ConfigError
from bridge.pipeline import source_fingerprint

GRAPHQL = """
[sources.graphql]
query = "query($after: String) { issues(after: $after) { nodes { id } } }"
variables = { first = 50 }
"""

BODY_CURSOR = """
[sources.paginate]
kind = "cursor"
cursor = "$.data.issues.pageInfo.endCursor"
has_more = "$.data.issues.pageInfo.hasNextPage"
body_param = "variables.after"
"""


def _load(write_config, extra: str = "", url: str = "https://api.example.com/graphql"):
    path = write_config(
        f"""
[bridge]
state = "state.db"

[[sources]]
name = "gh"
url = "{url}"
every = "1m"
items = "$.data.issues.nodes[*]"
{extra}
"""
    )
    return load_config(path, {})


def test_graphql_sends_a_post_with_query_and_variables(write_config):
    """[sources.graphql] makes the request a POST of {"query", "variables"}, never conditional."""
    source = _load(write_config, GRAPHQL + BODY_CURSOR).sources[0]
    assert source.request_method == "POST"
    assert source.request_body == {
        "query": "query($after: String) { issues(after: $after) { nodes { id } } }",
        "variables": {"first": 50},
    }
    assert source.page_spec is not None and source.page_spec.body_param == ("variables", "after")


def test_graphql_defaults(write_config):
    """variables defaults to an empty table; a plain source keeps its method and body."""
    source = _load(write_config, '[sources.graphql]\nquery = "{ viewer { login } }"').sources[0]
    assert source.request_body == {"query": "{ viewer { login } }", "variables": {}}
    plain = _load(write_config).sources[0]
    assert (plain.request_method, plain.request_body, plain.graphql, plain.detail) == (
        "GET",
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('body = { a = 1 }\nmethod = "POST"\n' + GRAPHQL, "'body' and [sources.graphql] both"),
        ('method = "GET"\n' + GRAPHQL, '[sources.graphql] is sent with POST; drop method = "GET"'),
        ('[sources.graphql]\nquery = "  "', "must be a non-empty GraphQL query"),
        ('[sources.graphql]\nquery = "{ a }"\nextra = 1', "extra"),
        (
            BODY_CURSOR.replace(
                'body_param = "variables.after"', 'param = "after"\nbody_param = "x"'
            ),
            "give exactly one of 'param' (a query parameter) or 'body_param'",
        ),
        (BODY_CURSOR, "paginate.body_param puts the cursor in the JSON body: it needs"),
        (
            'method = "POST"\nbody = { variables = 3 }\n' + BODY_CURSOR,
            "'variables' is a number, not an object",
        ),
        (
            GRAPHQL + BODY_CURSOR.replace("variables.after", "variables..after"),
            "is not a dotted path of member names",
        ),
    ],
)
def test_graphql_and_body_param_errors(write_config, extra, message):
    """Conflicting or malformed keys are refused at load, naming the source."""
    with pytest.raises(ConfigError) as caught:
        _load(write_config, extra)
    text = str(caught.value)
    assert 'sources "gh" (sources[0])' in text
    assert message in text


def test_body_param_works_for_a_plain_post_body(write_config):
    """A non-GraphQL POST body takes the cursor at its dotted path too."""
    extra = 'method = "POST"\nbody = { filter = { open = true } }\n' + BODY_CURSOR.replace(
        "variables.after", "page.cursor"
    )
    source = _load(write_config, extra).sources[0]
    assert source.page_spec is not None and source.page_spec.body_param == ("page", "cursor")


DETAIL = """
[sources.detail]
url = "https://api.example.com/orders/{id}?expand={$.kind}"
items = "$.order"
"""


def test_detail_table_compiles_its_placeholders(write_config):
    """Placeholders are paths of the list entry: {id} is $.id, {$.kind} a JSONPath."""
    source = _load(write_config, 'key = "$.id"' + DETAIL).sources[0]
    spec = source.detail_spec
    assert spec is not None and spec.concurrency == 4 and spec.items.text == "$.order"
    assert [p.text for p in spec.url.placeholders] == ["$.id", "$.kind"]
    # ignore/fields belong to the detail; the list entry is compared whole
    assert source.list_spec.ignore == () and source.list_spec.fields == ()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://api.example.com/orders", "no placeholder: every item"),
        ("https://{tenant}.example.com/orders/{id}", "only after the host"),
        ("https://api.example.com/orders/{id", "unclosed '{'"),
        ("https://api.example.com/orders/id}", "unmatched '}'"),
        ("https://api.example.com/orders/{}", "empty placeholder"),
        ("https://api.example.com/orders/{a b}", "neither a member path"),
        ("https://api.example.com/orders/{$[?(}", "placeholder {$[?(}"),
        ("ftp://api.example.com/orders/{id}", "expected an http:// or https:// URL"),
    ],
)
def test_detail_url_errors(write_config, url, message):
    """A detail URL that cannot work is refused at load with what is wrong."""
    with pytest.raises(ConfigError) as caught:
        _load(write_config, f'[sources.detail]\nurl = "{url}"')
    assert message in str(caught.value)
    assert "detail" in str(caught.value)


def test_detail_concurrency_is_bounded(write_config):
    """detail.concurrency is 1 to 32."""
    with pytest.raises(ConfigError, match="concurrency"):
        _load(write_config, '[sources.detail]\nurl = "https://a.example/o/{id}"\nconcurrency = 0')
    with pytest.raises(ConfigError, match="concurrency"):
        _load(write_config, '[sources.detail]\nurl = "https://a.example/o/{id}"\nconcurrency = 33')


def test_fingerprint_follows_graphql_and_detail_but_not_detail_concurrency(write_config):
    """Changing the query, variables, body_param or detail re-baselines; concurrency does not."""
    plain = source_fingerprint(_load(write_config).sources[0])
    base = source_fingerprint(_load(write_config, GRAPHQL).sources[0])
    other_vars = source_fingerprint(
        _load(write_config, GRAPHQL.replace("first = 50", "first = 10")).sources[0]
    )
    detail = source_fingerprint(_load(write_config, DETAIL).sources[0])
    detail_conc = source_fingerprint(_load(write_config, DETAIL + "concurrency = 9").sources[0])
    detail_items = source_fingerprint(
        _load(write_config, DETAIL.replace("$.order", "$.data")).sources[0]
    )
    assert len({plain, base, other_vars, detail, detail_items}) == 5
    assert detail == detail_conc


def test_existing_cursor_fingerprints_do_not_move(write_config):
    """Adding body_param did not re-baseline query-parameter cursor sources."""
    source = _load(write_config, '[sources.paginate]\nkind = "cursor"\ncursor = "$.next"').sources[
        0
    ]
    assert "body_param" not in source.fingerprint_fields()["paginate"]


def test_check_summary_shows_graphql_and_detail(write_config):
    """check's summary says the source is GraphQL, where its cursor goes and its detail URL."""
    config = _load(write_config, 'key = "$.id"\n' + GRAPHQL + BODY_CURSOR + DETAIL)
    text = "\n".join(iter_summary(config))
    assert "gh: POST https://api.example.com/graphql" in text
    assert "graphql: query of 1 line(s), variables first" in text
    assert "paginate: cursor (in body variables.after), at most 100 pages" in text
    assert (
        "detail: GET https://api.example.com/orders/{id}?expand={$.kind} per new or changed "
        "entry, items $.order, at most 4 at once (per_host_concurrency = 2 caps it)" in text
    )
    doc = summary_doc(config)["sources"][0]
    assert doc["method"] == "POST"
    assert doc["graphql"] == {"variables": ["first"]}
    assert doc["detail"] == {
        "url": "https://api.example.com/orders/{id}?expand={$.kind}",
        "items": "$.order",
        "concurrency": 4,
    }
