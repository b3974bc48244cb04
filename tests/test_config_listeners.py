"""Listener configuration: defaults, validation messages, templates, redaction, examples."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.config import iter_summary, load_config
from bridge.core.render import render_body
from bridge.core.signing import generate_key_pair, generate_secret
from bridge.errors import ConfigError
from bridge.models import Event

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "config" / "examples"


def _write(tmp_path: Path, listener: str, name: str = "pollbridge.toml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"""
[[sources]]
name = "orders"
url = "https://api.example.com/orders"
every = "30s"

[[listeners]]
name = "hooks"
url = "https://hooks.example.com/in"
{listener}
"""
    )
    return path


def test_listener_defaults(tmp_path):
    """Without new keys a listener behaves as before, with the documented protections on."""
    (listener,) = load_config(_write(tmp_path, ""), env={}).listeners
    assert listener.format == "pollbridge"
    assert listener.body_format.kind == "pollbridge"
    assert listener.body_format.content_type == "application/json"
    assert listener.on_fields == [] and listener.match is None
    assert listener.rate is None and listener.burst == 1
    assert listener.breaker_failures == 10
    assert listener.breaker_cooldown == timedelta(minutes=1)
    assert listener.disable_after == timedelta(days=5)
    assert listener.coalesce is False
    assert not listener.keys


def test_every_new_key_is_read(tmp_path):
    """All listener keys load into typed values."""
    signing_key, _ = generate_key_pair()
    new, old = generate_secret(), generate_secret()
    config = load_config(
        _write(
            tmp_path,
            f"""
on_fields = ["/status", "/shipping/carrier"]
match = "$.data.after[?(@.total > 100)]"
format = "cloudevents"
content_type = "application/cloudevents+json; charset=utf-8"
secrets = ["{new}", "{old}"]
signing_key = "{signing_key}"
rate = "100/m"
burst = 5
breaker_failures = 4
breaker_cooldown = "30s"
disable_after = "never"
coalesce = true
""",
        ),
        env={},
    )
    (listener,) = config.listeners
    assert listener.route().on_fields == ("/status", "/shipping/carrier")
    assert listener.route().match is not None
    assert listener.body_format.content_type == "application/cloudevents+json; charset=utf-8"
    assert len(listener.keys.secrets) == 2 and len(listener.keys.ed25519) == 1
    assert listener.rate_limit is not None and listener.rate_limit.per_second == pytest.approx(
        100 / 60
    )
    assert listener.disable_after is None
    assert (listener.breaker_failures, listener.breaker_cooldown) == (4, timedelta(seconds=30))
    summary = "\n".join(iter_summary(config))
    assert "on_fields /status, /shipping/carrier" in summary
    assert "rate 100/m (burst 5)" in summary
    assert "signed (2 secret(s) ***, ed25519 key ***)" in summary
    assert "coalesce" in summary


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('on_fields = ["$.status"]', "field on_fields: '$.status' is not a JSON Pointer"),
        ('on_fields = ["/a~2"]', "field on_fields: '/a~2' is not a valid JSON Pointer"),
        ('match = "$.data[?(@.total >"', "field match: invalid JSONPath"),
        ('format = "xml"', "field format: Input should be 'pollbridge' or 'cloudevents'"),
        ('template = "{{ x }}"\ntemplate_file = "a.j2"', "give 'template' or 'template_file'"),
        ('template = "{{ x }}"\nformat = "cloudevents"', "a template makes its own body"),
        ('template = "{% for x in y %}"', "template, line 1: Unexpected end of template"),
        ('template_file = "missing.j2"', "missing.j2'"),
        ('content_type = "json"', "field content_type: expected a media type"),
        ('secrets = ["nope"]', "field secrets: secrets[0]: a webhook secret must start"),
        ('signing_key = "whsec_abc"', "field signing_key: an ed25519 signing key must start"),
        ('rate = "fast"', "field rate: invalid rate 'fast'"),
        ("burst = 0", "field burst: Input should be greater than or equal to 1"),
        ("breaker_failures = -1", "field breaker_failures"),
        ('breaker_cooldown = "0s"', "field breaker_cooldown: must be greater than zero"),
        ('disable_after = "soon"', "field disable_after: invalid duration"),
        ("coalesce = 3", "field coalesce"),
        ("on_field = []", "field on_field: unknown key"),
    ],
)
def test_invalid_listener_keys_name_listener_and_field(tmp_path, snippet, message):
    """Each bad value is rejected at load, naming the listener and the field."""
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, snippet), env={})
    assert 'listeners "hooks" (listeners[0])' in str(err.value)
    assert message in str(err.value)


def test_secret_and_secrets_together_are_refused(tmp_path):
    """One way to give secrets: rotation uses the list."""
    a, b = generate_secret(), generate_secret()
    with pytest.raises(ConfigError, match="give 'secret' or 'secrets', not both"):
        load_config(_write(tmp_path, f'secret = "{a}"\nsecrets = ["{b}"]'), env={})


def test_template_file_is_relative_to_the_file_that_names_it(tmp_path):
    """template_file resolves beside the main file, or beside the conf.d file for its listeners."""
    (tmp_path / "main.j2").write_text('{"from": "main"}')
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "extra.j2").write_text('{"from": "conf.d"}')
    (tmp_path / "conf.d" / "more.toml").write_text(
        '[[listeners]]\nname = "more"\nurl = "https://x.example.com/"\ntemplate_file = "extra.j2"\n'
    )
    config = load_config(_write(tmp_path, 'template_file = "main.j2"'), env={})
    event = Event("evt_1", 1, "orders", "1", "created", datetime.now(UTC), None, {}, [])
    bodies = [json.loads(render_body(lst.body_format, event)) for lst in config.listeners]
    assert bodies == [{"from": "main"}, {"from": "conf.d"}]


def test_secrets_and_signing_key_are_redacted(tmp_path):
    """Every secret of every listener is in the sensitive set, so logs and errors hide it."""
    signing_key, _ = generate_key_pair()
    new, old = generate_secret(), generate_secret()
    config = load_config(
        _write(tmp_path, f'secrets = ["{new}", "{old}"]\nsigning_key = "{signing_key}"'), env={}
    )
    text = f"a {new} b {old} c {signing_key}"
    assert config.redact(text) == "a *** b *** c ***"
    assert all(v not in "\n".join(iter_summary(config)) for v in (new, old, signing_key))


def _example_env() -> dict[str, str]:
    signing_key, _ = generate_key_pair()
    return {
        "SHOP_API_TOKEN": "t",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXX",
        "INVENTORY_TOKEN": "t",
        "EVENTS_SECRET_NEW": generate_secret(),
        "EVENTS_SECRET_OLD": generate_secret(),
        "EVENTS_SIGNING_KEY": signing_key,
        "CRM_TOKEN": "t",
        "FULFILMENT_SECRET": generate_secret(),
    }


@pytest.mark.parametrize("name", ["slack.toml", "cloudevents.toml", "filtered.toml"])
def test_examples_load(name):
    """Each example in config/examples/ is a valid configuration."""
    config = load_config(EXAMPLES / name, env=_example_env())
    assert config.listeners


def test_slack_example_renders_a_slack_message():
    """The Slack example's template produces Slack's {text, blocks} shape for updates and creations."""
    (listener,) = load_config(EXAMPLES / "slack.toml", env=_example_env()).listeners
    at = datetime(2026, 11, 23, 12, tzinfo=UTC)
    updated = Event(
        "evt_1",
        1,
        "orders",
        "1042",
        "updated",
        at,
        {"status": "open"},
        {"status": 'paid "now"'},
        [],
    )
    body = json.loads(render_body(listener.body_format, updated))
    assert body["text"] == 'Order 1042: open → paid "now"'
    assert body["blocks"][0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": '*Order 1042: open → paid "now"*'},
    }
    assert "evt_1" in body["blocks"][1]["elements"][0]["text"]
    created = Event("evt_2", 2, "orders", "7", "created", at, None, {"status": "open"}, [])
    assert json.loads(render_body(listener.body_format, created))["text"] == "New order 7: open"
