"""Request bodies: the pollbridge envelope, CloudEvents 1.0 and sandboxed Jinja2 templates."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.payload import build_payload, cloudevent
from bridge.core.render import (
    BodyFormat,
    RenderFailed,
    compile_template,
    is_json_content_type,
    render_body,
)
from bridge.models import Event

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
AT = datetime(2026, 11, 23, 12, 0, 0, 123000, tzinfo=UTC)


def _event(kind="updated", before=None, after=None, key="42"):
    before = {"id": 42, "status": "open"} if before is None and kind != "created" else before
    after = (
        {"id": 42, "status": "paid", "total": 12.5}
        if after is None and kind != "deleted"
        else after
    )
    changes = [{"op": "replace", "path": "/status", "value": "paid"}]
    return Event("evt_01TEST", 5, "orders", key, kind, AT, before, after, changes)


def _template(text, content_type="application/json", label="template"):
    return BodyFormat("template", content_type, compile_template(text, label), label)


def test_pollbridge_format_is_the_documented_envelope():
    """The default body is byte-identical to build_payload."""
    event = _event()
    assert render_body(BodyFormat(), event) == build_payload(event)


def test_cloudevents_body_has_the_required_attributes():
    """format = cloudevents: specversion, id, source, type, subject, time, datacontenttype, data."""
    body = json.loads(render_body(BodyFormat("cloudevents"), _event()))
    assert body == {
        "specversion": "1.0",
        "id": "evt_01TEST",
        "source": "pollbridge/orders",
        "type": "pollbridge.item.updated",
        "subject": "42",
        "time": "2026-11-23T12:00:00.123Z",
        "datacontenttype": "application/json",
        "data": {
            "before": {"id": 42, "status": "open"},
            "after": {"id": 42, "status": "paid", "total": 12.5},
            "changes": [{"op": "replace", "path": "/status", "value": "paid"}],
        },
    }


def test_cloudevents_subject_of_a_composite_key_is_its_json_text():
    """A composite key becomes a string subject (CloudEvents requires a string)."""
    assert cloudevent(_event(key=("eu", "42")))["subject"] == '["eu","42"]'


def test_template_sees_event_fields_by_name_and_as_event():
    """id, type, timestamp, source, key, data and the whole event are in the template's scope."""
    fmt = _template(
        '{"t": {{ [id, type, timestamp, source, key] | tojson }}, '
        '"same": {{ (event.data == data) | tojson }}, "status": {{ data.after.status | tojson }}, '
        '"n": {{ data.changes | length }}}'
    )
    assert json.loads(render_body(fmt, _event())) == {
        "t": ["evt_01TEST", "item.updated", "2026-11-23T12:00:00.123Z", "orders", "42"],
        "same": True,
        "status": "paid",
        "n": 1,
    }


def test_missing_fields_render_empty_so_one_template_fits_every_event_type():
    """data.before.status on a created event (before is null) renders as an empty string."""
    fmt = _template("[{{ data.before.status }}|{{ data.after.nope.deeper }}]", "text/plain")
    assert render_body(fmt, _event("created")) == b"[|]"


@pytest.mark.parametrize(
    ("text", "content_type", "message"),
    [
        ("{{ 1 // 0 }}", "text/plain", "template, line 1: ZeroDivisionError"),
        ("ok\n{{ data.update({}) }}", "text/plain", "line 2: SecurityError"),
        ('{"a": {{ data.after.status }}}', "application/json", "rendered invalid JSON"),
        ("{{ data.after.status }}", "application/vnd.partner+json", "rendered invalid JSON"),
    ],
)
def test_render_failures_name_the_template_line_and_reason(text, content_type, message):
    """A failing template raises RenderFailed with a message an operator can act on."""
    with pytest.raises(RenderFailed, match=message):
        render_body(_template(text, content_type), _event())


def test_sandbox_hides_python_internals():
    """The sandbox refuses dunder attributes: nothing of the process leaks into a body."""
    fmt = _template("{{ data.__class__ }}{{ event.items.__globals__ }}", "text/plain")
    assert render_body(fmt, _event()) == b""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{% if x %}", "line 1: Unexpected end of template"),
        ("a\n{{ x | nosuchfilter }}", "line 2: No filter named 'nosuchfilter'"),
        ("{{ }", "line 1"),
    ],
)
def test_compile_errors_name_the_line(text, message):
    """Syntax errors are found at load, with their line."""
    with pytest.raises(ValueError, match=message):
        compile_template(text, "template")


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/cloudevents+json", True),
        ("text/json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
    ],
)
def test_json_content_types_are_recognised(content_type, expected):
    """Output is checked as JSON exactly for JSON media types."""
    assert is_json_content_type(content_type) is expected


@RELAXED
@given(st.text(max_size=40))
def test_tojson_makes_any_item_text_safe_in_a_json_template(status):
    """Quotes, backslashes or newlines in item data cannot break a template that uses tojson."""
    fmt = _template('{"text": {{ ("now: " ~ data.after.status) | tojson }}}')
    body = render_body(fmt, _event(after={"status": status}))
    assert json.loads(body) == {"text": "now: " + status}


HOSTILE_TEMPLATES = {
    "nested huge ranges": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "range() of 100,000",
    ),
    "a huge integer power": ("{{ (data.after.id + 9) ** 99999999 }}", "bits"),
    "squaring in a loop": (
        "{% set ns = namespace(x=data.after.id) %}{% for i in range(64) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
        "product",
    ),
    "string repetition": ("{{ 'x' * (data.after.id * 1500000000) }}", "repeating a value"),
    "list repetition": ("{{ ([1] * 1500000000)|length }}", "repeating a value"),
    "concatenation": ("{% set a = 'x' * 900000 %}{{ a ~ a ~ a }}", "concatenating"),
    "printf width": ("{{ '%0999999999d' % 1 }}", "format width"),
    "printf star width": ("{{ '%*d' % (999999999, 1) }}", "format width"),
    "format filter width": ("{{ '%999999999s'|format('x') }}", "format width"),
    "str.format nested width": ("{{ '{0:{1}}'.format('x', 999999999) }}", "format width"),
    "str.center": ("{{ 'x'.center(999999999) }}", "str.center"),
    "center filter": ("{{ 'x'|center(999999999) }}", "padding"),
    "indent filter": ("{{ ('a\\n' * 1000)|indent(999999) }}", "indenting"),
    "replace filter": ("{{ ('x' * 900000)|replace('x', 'yyyy') }}", "replace"),
    "str.replace": ("{{ ('x' * 900000).replace('x', 'yyyy') }}", "str.replace"),
    "join filter": ("{{ (['a'] * 1000)|join('x' * 900000) }}", "join"),
    "tojson indent": ("{{ data|tojson(indent=999999999) }}", "indent"),
    "batch fill": ("{{ range(3)|batch(999999999, 'x')|list }}", "batch"),
    "lipsum": ("{{ lipsum(999999) }}", "lipsum"),
}


@pytest.mark.parametrize(("text", "reason"), HOSTILE_TEMPLATES.values(), ids=HOSTILE_TEMPLATES)
def test_a_render_is_bounded_in_memory(text, reason):
    """Each way to make a render huge fails it, with the reason, before the memory is taken."""
    with pytest.raises(RenderFailed, match="template: ") as failed:
        render_body(_template(text, "text/plain"), _event())
    assert reason in str(failed.value)


def test_a_render_past_its_deadline_stops():
    """A deadline already passed stops the render at its next loop step."""
    template = _template("{% for i in range(10) %}{{ i }}{% endfor %}", "text/plain")
    with pytest.raises(RenderFailed, match="longer than its deadline"):
        render_body(template, _event(), deadline=0.0)


def test_bounded_filters_and_operators_still_work_within_their_limits():
    """Within the bounds, the wrapped filters and operators behave as Jinja2's own."""
    text = (
        "{{ 'ab' * 2 }}|{{ 2 ** 10 }}|{{ 6 * 7 }}|{{ '%05d' % 42 }}|{{ '%s-%s'|format(1, 2) }}|"
        "{{ 'x'|center(5) }}|{{ ['a', 'b']|join(',') }}|{{ data.after.status|replace('a', 'A') }}|"
        "{{ [1, 2, 3]|batch(2)|list }}|{{ {'a': 1}|tojson(indent=2) }}|{{ '{:>4}'.format(7) }}|"
        "{{ 'a' ~ 'b' }}|{{ range(3)|list }}"
    )
    body = render_body(_template(text, "text/plain"), _event()).decode()
    assert body == (
        'abab|1024|42|00042|1-2|  x  |a,b|pAid|[[1, 2], [3]]|{\n  "a": 1\n}|   7|ab|[0, 1, 2]'
    )
