"""Configuration of pagination, auth, conditional requests, politeness and the guards."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bridge.config import iter_summary, load_config
from bridge.core.guards import DeleteLimit
from bridge.errors import ConfigError


def _load(write_config, source_extra: str = "", top: str = ""):
    path = write_config(
        f"""
[bridge]
state = "state.db"
{top}
[[sources]]
name = "gh"
url = "https://api.github.com/repos/o/r/issues"
every = "1m"
{source_extra}
"""
    )
    return load_config(path, {"TOKEN": "ghp_from_env_123"})


def test_defaults(write_config):
    """Every new key has the documented default."""
    config = _load(write_config)
    s = config.sources[0]
    assert s.paginate is None and s.page_spec is None and s.auth is None
    assert s.conditional is True
    assert s.max_backoff == timedelta(hours=1)
    assert s.max_deletes == "50%" and s.delete_limit == DeleteLimit(percent=50)
    assert s.confirm_polls == 3 and s.deletes is True and s.rebaseline == "silent"
    assert config.bridge.per_host_concurrency == 2 and config.hosts == []


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('kind = "link"', {"kind": "link", "max_pages": 100}),
        ('kind = "next_url"\nnext = "$.links.next"', {"kind": "next_url", "param": None}),
        (
            'kind = "cursor"\ncursor_from_last_item = "$.id"\nhas_more = "$.has_more"\n'
            'param = "starting_after"',
            {"kind": "cursor", "param": "starting_after"},
        ),
        ('kind = "cursor"\ncursor = "$.next"', {"kind": "cursor", "param": "cursor"}),
        ('kind = "page"', {"kind": "page", "param": "page", "start": 1, "size": None}),
        (
            'kind = "page"\nsize_param = "per_page"\nsize = 50\nmax_pages = 7',
            {"size_param": "per_page", "size": 50, "max_pages": 7},
        ),
        ('kind = "offset"', {"param": "offset", "start": 0, "size_param": None}),
        ('kind = "offset"\nsize = 20', {"size_param": "limit", "size": 20}),
    ],
)
def test_paginate_kinds(write_config, table, expected):
    """Each paginate kind loads into plain values with its defaults."""
    spec = _load(write_config, f"[sources.paginate]\n{table}").sources[0].page_spec
    assert spec is not None
    for field, value in expected.items():
        assert getattr(spec, field) == value


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'paginate = { kind = "pages" }',
            "field paginate.kind: unknown kind 'pages'; expected one of 'link', 'next_url', "
            "'cursor', 'page', 'offset'",
        ),
        ("paginate = { max_pages = 3 }", "field paginate.kind: required key is missing"),
        ('paginate = { kind = "link", next = "$.x" }', "field paginate.next: unknown key"),
        ('paginate = { kind = "next_url" }', "field paginate.next: required key is missing"),
        (
            'paginate = { kind = "next_url", next = "links" }',
            "field paginate.next: invalid JSONPath",
        ),
        ('paginate = { kind = "cursor" }', "give exactly one of 'cursor'"),
        ('paginate = { kind = "page", size_param = "n" }', "'size_param' needs 'size'"),
        ('paginate = { kind = "page", size = 0 }', "field paginate.size: Input should be greater"),
        ('paginate = { kind = "link", max_pages = 0 }', "field paginate.max_pages"),
        ('paginate = "link"', "field paginate: expected a table"),
        ('auth = { kind = "bearer" }', "field auth.token: required key is missing"),
        (
            'auth = { kind = "oauth2", token_url = "ftp://x", client_id = "a", client_secret = "b" }',
            "field auth.token_url: expected an http:// or https:// URL",
        ),
        (
            'auth = { kind = "bearer", token = "" }',
            "field auth.token: must not be empty",
        ),
        ('auth = { kind = "apikey" }', "field auth.kind: unknown kind 'apikey'"),
        ('max_deletes = "half"', "field max_deletes: expected a percentage"),
        ("confirm_polls = 1", "field confirm_polls"),
        ('max_backoff = "0s"', "field max_backoff: must be greater than zero"),
        ('rebaseline = "loud"', "field rebaseline"),
    ],
)
def test_invalid_values_are_named_precisely(write_config, extra, message):
    """A bad value names the source, its index and the nested field, and says what was expected."""
    with pytest.raises(ConfigError) as caught:
        _load(write_config, extra)
    text = str(caught.value)
    assert 'sources "gh" (sources[0])' in text
    assert message in text


def test_hosts_and_per_host_concurrency(write_config):
    """[[hosts]] tables set a min_interval per host name; [bridge] per_host_concurrency a limit."""
    config = _load(
        write_config,
        top='per_host_concurrency = 4\n[[hosts]]\nname = "API.GitHub.com"\nmin_interval = "1s"\n'
        '[[hosts]]\nname = "api.stripe.com"',
    )
    assert config.bridge.per_host_concurrency == 4
    assert config.min_intervals_s() == {"api.github.com": 1.0, "api.stripe.com": 0.0}
    assert any("host api.github.com" in line for line in iter_summary(config))


@pytest.mark.parametrize(
    ("top", "message"),
    [
        (
            '[[hosts]]\nname = "https://api.github.com"',
            'hosts "https://api.github.com" (hosts[0]), field name',
        ),
        (
            '[[hosts]]\nname = "a.com"\nmin_interval = "soon"',
            "field min_interval: invalid duration",
        ),
        ('[[hosts]]\nname = "a.com"\n[[hosts]]\nname = "A.com"', 'duplicate host "a.com"'),
        ('[[hosts]]\nname = "a.com"\nrate = 3', "field rate: unknown key"),
        ("per_host_concurrency = 0", "[bridge], field per_host_concurrency"),
    ],
)
def test_invalid_hosts(write_config, top, message):
    """Host tables are validated like the others."""
    with pytest.raises(ConfigError, match=None) as caught:
        _load(write_config, top=top)
    assert message in str(caught.value)


def test_hosts_must_be_an_array(write_config):
    """A [hosts] table instead of [[hosts]] is refused with the right spelling."""
    path = write_config('[hosts]\nname = "a.com"\n')
    with pytest.raises(ConfigError, match=r"\[\[hosts\]\]"):
        load_config(path, {})


@pytest.mark.parametrize(
    ("auth", "secret"),
    [
        ('{ kind = "bearer", token = "${TOKEN}" }', "ghp_from_env_123"),
        ('{ kind = "bearer", token = "literal-token-1" }', "literal-token-1"),
        ('{ kind = "basic", username = "me", password = "pass-word-9" }', "pass-word-9"),
        ('{ kind = "header", name = "X-Key", value = "hdr-value-7" }', "hdr-value-7"),
        ('{ kind = "query", name = "key", value = "qry-value-7" }', "qry-value-7"),
        (
            '{ kind = "oauth2", token_url = "https://a.example/t", client_id = "cid", '
            'client_secret = "cl-secret-5" }',
            "cl-secret-5",
        ),
    ],
)
def test_auth_secrets_are_redacted(write_config, auth, secret):
    """Every auth secret, literal or from ${VAR}, is redacted everywhere, summary included."""
    config = _load(write_config, f"auth = {auth}")
    assert secret in config.sensitive_values
    assert config.redact(f"x {secret} y") == "x *** y"
    summary = "\n".join(iter_summary(config))
    assert secret not in summary and "auth: " in summary


def test_pagination_is_part_of_the_fingerprint_only_when_set(write_config):
    """Adding paginate changes the fingerprint; sources without it keep their old one."""
    plain = _load(write_config).sources[0]
    assert "paginate" not in plain.fingerprint_fields()
    paged = _load(write_config, 'paginate = { kind = "link" }').sources[0]
    more = _load(write_config, 'paginate = { kind = "link", max_pages = 5 }').sources[0]
    assert paged.fingerprint_fields()["paginate"] == {"kind": "link"}
    assert paged.fingerprint_fields() == more.fingerprint_fields()
    assert paged.fingerprint_fields() != plain.fingerprint_fields()


@pytest.mark.parametrize(
    ("every", "shown", "seconds"),
    [
        ("1.5s", "every 1.5s", 1.5),
        ("250ms", "every 250ms", 0.25),
        ("1m30.25s", "every 1m30.25s", 90.25),
    ],
)
def test_sub_second_intervals_are_shown_as_they_are_used(write_config, every, shown, seconds):
    """`every = "1.5s"` is honoured by the scheduler, and `check` shows 1.5s, not 1s."""
    from bridge.daemon.schedule import build_trigger

    path = write_config(f'[[sources]]\nname = "s"\nurl = "https://x.example/"\nevery = "{every}"\n')
    config = load_config(path, {})
    (line,) = [x for x in iter_summary(config) if x.startswith("  - s:")]
    assert f" {shown}," in line
    assert build_trigger(config.sources[0]).interval == timedelta(seconds=seconds)
