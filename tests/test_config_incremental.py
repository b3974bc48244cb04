"""Configuration of ``mode`` and ``[sources.incremental]``: defaults, errors, fingerprint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.config import iter_summary, load_config
from bridge.errors import ConfigError
from bridge.pipeline import source_fingerprint

BASE = 'cursor = "$.updated_at"\nparam = "updated_since"\n'


def _load(write_config, incremental: str | None = BASE, source_extra: str = 'mode = "incremental"'):
    table = "" if incremental is None else f"[sources.incremental]\n{incremental}"
    path = write_config(
        f"""
[bridge]
state = "state.db"
[[sources]]
name = "tickets"
url = "https://acme.example/api/v2/tickets"
every = "1m"
{source_extra}
{table}
"""
    )
    return load_config(path, {})


def test_defaults(write_config):
    """mode defaults to snapshot; an incremental table defaults to iso8601, now, no lookback."""
    plain = _load(write_config, None, "").sources[0]
    assert (plain.mode, plain.incremental) == ("snapshot", None)
    source = _load(write_config).sources[0]
    assert source.incremental is not None
    spec = source.incremental.spec
    assert (spec.format, spec.start, spec.lookback) == ("iso8601", None, timedelta(0))
    assert (spec.deleted_when, spec.reconcile_every, spec.body_path) == (None, None, None)


def test_every_key_is_read(write_config):
    text = (
        BASE
        + 'format = "unix_ms"\nstart = "2026-01-01T00:00:00Z"\nlookback = "2m"\n'
        + 'deleted_when = \'$[?(@.status == "deleted")]\'\nreconcile_every = "1d"\n'
    )
    config = _load(write_config, text)
    spec = config.sources[0].incremental.spec  # type: ignore[union-attr]
    assert spec.start == datetime(2026, 1, 1, tzinfo=UTC)
    assert (spec.lookback, spec.reconcile_every) == (timedelta(minutes=2), timedelta(days=1))
    assert spec.deleted_when is not None and spec.deleted_when.matches({"status": "deleted"})
    assert not spec.deleted_when.matches({"status": "open"})
    summary = "\n".join(iter_summary(config))
    assert (
        "incremental: cursor $.updated_at (unix_ms) sent as param updated_since, start "
        '2026-01-01T00:00:00Z, lookback 2m, deleted_when $[?(@.status == "deleted")], '
        "reconcile every 1d"
    ) in summary


def test_append_is_a_mode_name(write_config):
    """The three modes are known names; the append mode's own keys live elsewhere."""
    assert _load(write_config, None, 'mode = "append"').sources[0].mode == "append"


@pytest.mark.parametrize(
    ("incremental", "extra", "message"),
    [
        (None, 'mode = "incremental"', 'mode = "incremental" needs a [sources.incremental]'),
        (BASE, "", '[sources.incremental] applies only to mode = "incremental"'),
        (BASE, 'mode = "full"', "field mode"),
        ('param = "since"\n', 'mode = "incremental"', "field incremental.cursor: required key"),
        ('cursor = "$.u"\n', 'mode = "incremental"', "give exactly one of 'param'"),
        (BASE + 'body = "variables.since"\n', 'mode = "incremental"', "give exactly one of"),
        ('cursor = "updated"\nparam = "s"\n', 'mode = "incremental"', "incremental.cursor"),
        ('cursor = "$"\nparam = "s"\n', 'mode = "incremental"', "inside the item"),
        (BASE + 'format = "rfc822"\n', 'mode = "incremental"', "field incremental.format"),
        (BASE + 'start = "yesterday"\n', 'mode = "incremental"', "field incremental.start"),
        (BASE + 'lookback = "soon"\n', 'mode = "incremental"', "field incremental.lookback"),
        (BASE + 'reconcile_every = "0s"\n', 'mode = "incremental"', "incremental.reconcile_every"),
        (BASE + "deleted_when = '$[?(@.x =='\n", 'mode = "incremental"', "deleted_when"),
        (BASE + "extra = 1\n", 'mode = "incremental"', "field incremental.extra: unknown key"),
        (
            'cursor = "$.u"\nbody = "variables.since"\n',
            'mode = "incremental"',
            'it needs method = "POST"',
        ),
        (
            'cursor = "$.u"\nbody = "variables..since"\n',
            'mode = "incremental"\nmethod = "POST"',
            "is not a dotted path",
        ),
        (
            'cursor = "$.u"\nbody = "variables.since"\n',
            'mode = "incremental"\nmethod = "POST"\nbody = { variables = 3 }',
            "'variables' is a number, not an object",
        ),
    ],
)
def test_invalid_values_are_named_precisely(write_config, incremental, extra, message):
    """A bad value names the source and the field, and says what was expected."""
    with pytest.raises(ConfigError) as caught:
        _load(write_config, incremental, extra)
    text = str(caught.value)
    assert 'sources "tickets" (sources[0])' in text
    assert message in text


def test_mode_and_cursor_define_the_source_and_lookback_does_not(write_config):
    """Changing mode or incremental.cursor re-baselines; lookback, format, reconcile do not;
    a snapshot source keeps the fingerprint it had before modes existed."""
    plain = _load(write_config, None, "").sources[0]
    assert "mode" not in plain.fingerprint_fields()
    base = source_fingerprint(_load(write_config).sources[0])
    assert base != source_fingerprint(plain)
    calmer = _load(write_config, BASE + 'lookback = "10m"\nreconcile_every = "1h"\n')
    assert source_fingerprint(calmer.sources[0]) == base
    other = _load(write_config, 'cursor = "$.modified"\nparam = "updated_since"\n')
    assert source_fingerprint(other.sources[0]) != base
