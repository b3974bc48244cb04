"""Fuzzing with Hypothesis: API bodies and configuration files never crash pollbridge.

Every input ends in a correct result or in the project's own error (FormatError/ExtractionFailed
in the core, PollError through the pipeline, ConfigError from load_config) — never another
exception, never a value that differs from what the API sent. The diff's laws hold for arbitrary
JSON items. Example counts stay modest so the suite stays fast; raise them with
``HYPOTHESIS_PROFILE=long pytest --timeout 0 tests/test_fuzz.py`` when hunting.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import iter_summary, load_config
from bridge.core.diff import build_changes, diff_snapshots, plan_diff
from bridge.core.extract import ExtractionFailed, ItemSpec, extract_items
from bridge.core.formats import FormatError, parse_document
from bridge.core.hashing import canonical_json
from bridge.core.patch import apply_patch, make_patch
from bridge.core.paths import compile_path
from bridge.core.payload import build_payload
from bridge.errors import ConfigError
from bridge.http.poller import Poller
from bridge.models import Event, Item
from bridge.pipeline import Pipeline
from bridge.store import create_store

settings.register_profile(
    "default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# -- strategies -------------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(),  # beyond 64 bits too: must be refused, never rounded
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)


def _json(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(_text, children, max_size=4)
        ),
        max_leaves=25,
    )


json_values = _json(_scalars)
"""Any JSON text's value, including integers no 64-bit decoder can hold."""
decoded_values = _json(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        _text,
    )
)
"""What a JSON body can decode to: the values items are made of."""
_keys = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "1", ""]), st.none(), json_values)
json_items = st.lists(
    st.fixed_dictionaries({"id": _keys}, optional={"v": json_values, "x": json_values}),
    max_size=6,
)
api_docs = st.one_of(st.fixed_dictionaries({"data": json_items}), json_values)


def _mutate(body: bytes, data: st.DataObject) -> bytes:
    """A near-JSON variant: truncated, a byte flipped, junk inserted, or bytes swapped out."""
    if not body:
        return body
    how = data.draw(st.sampled_from(["truncate", "flip", "insert", "replace"]))
    at = data.draw(st.integers(0, len(body) - 1))
    if how == "truncate":
        return body[:at]
    if how == "flip":
        return body[:at] + bytes([body[at] ^ data.draw(st.integers(1, 255))]) + body[at + 1 :]
    junk = data.draw(
        st.sampled_from(
            [b"NaN", b"Infinity", b"-", b"1e999", b"\xff", b"\x00", b",", b"]", b"}", b'"', b"\\"]
        )
        | st.binary(max_size=4)
    )
    if how == "insert":
        return body[:at] + junk + body[at:]
    return body[:at] + junk + body[at + len(junk) :]


@st.composite
def api_bodies(draw: st.DrawFn) -> bytes:
    doc = draw(api_docs)
    body = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
    kind = draw(st.sampled_from(["json", "near", "bytes"]))
    if kind == "near":
        return _mutate(body, draw(st.data()))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    return body


SPECS = [
    ItemSpec(items=compile_path("$.data[*]"), key=(compile_path("$.id"),)),
    ItemSpec(
        items=compile_path("$.data[*]"),
        key=(compile_path("$.id"),),
        ignore=(compile_path("$.x"),),
    ),
    ItemSpec(items=compile_path("$[*]"), key=(compile_path("$.id"), compile_path("$.v"))),
    ItemSpec(items=compile_path("$.data[?(@.id > 0)]"), key=(compile_path("$.id"),)),
]


def _event(item_change: Any) -> Event:
    return Event(
        "evt_x",
        1,
        "s",
        item_change.key,
        item_change.type,
        datetime(2026, 1, 1, tzinfo=UTC),
        item_change.before,
        item_change.after,
        item_change.changes,
    )


def _same_json(a: Any, b: Any) -> bool:
    return canonical_json(a) == canonical_json(b)


# -- API bodies -------------------------------------------------------------------------------


@given(body=api_bodies(), previous=api_docs)
def test_any_body_decodes_extracts_and_diffs_or_fails_cleanly(body, previous):
    """decode + extract + diff either succeeds exactly or raises FormatError/ExtractionFailed."""
    try:
        doc = parse_document(body, "json")
    except FormatError as exc:
        assert str(exc)
        return
    # never a value different from the exact parse (no rounding, nothing dropped)
    assert _same_json(doc, json.loads(body))
    for spec in SPECS:
        try:
            items = extract_items(doc, spec)
            old_items = extract_items(previous, spec)
        except ExtractionFailed as exc:
            assert str(exc)
            continue
        old = {i.key_text: (i.key, i.value, i.hash) for i in old_items}
        changes = diff_snapshots(old, items, spec.ignore)
        for change in changes:
            # every change can be stored and sent exactly
            body_out = build_payload(_event(change))
            sent = orjson.loads(body_out)["data"]
            assert _same_json(sent["after"], change.after)
            assert _same_json(sent["before"], change.before)


@given(body=api_bodies())
def test_decode_never_rounds_an_integer(body):
    """Whatever a JSON body decodes to equals the exact (stdlib, arbitrary-precision) parse."""
    try:
        doc = parse_document(body, "json")
    except FormatError:
        return
    assert _same_json(doc, json.loads(body))


# -- the diff's laws --------------------------------------------------------------------------


def _items(values: list[Any]) -> list[Item]:
    spec = ItemSpec(items=compile_path("$[*]"), key=(compile_path("$.k"),))
    return extract_items([{"k": str(i), "v": v} for i, v in values], spec)


keyed_values = st.lists(st.tuples(st.integers(0, 8), decoded_values), max_size=8).map(
    lambda pairs: list({k: (k, v) for k, v in pairs}.values())
)


@given(keyed_values)
def test_diff_of_identical_snapshots_is_empty(values):
    """diff(a, a) is empty for any JSON items."""
    items = _items(values)
    assert plan_diff({i.key_text: i.hash for i in items}, items).empty


@given(keyed_values, keyed_values)
def test_old_plus_changes_is_new(old_values, new_values):
    """Applying the emitted changes to the old snapshot gives exactly the new one."""
    old, new = _items(old_values), _items(new_values)
    snapshot = {i.key_text: i.value for i in old}
    plan = plan_diff({i.key_text: i.hash for i in old}, new)
    changes = build_changes(plan, new, {k: (k, snapshot[k]) for k in plan.needs_before})
    for change in changes:
        if change.type == "deleted":
            assert _same_json(apply_patch(snapshot[change.key_text], change.changes), None)
            del snapshot[change.key_text]
        else:
            base = snapshot.get(change.key_text)
            patched = apply_patch(base, change.changes)
            assert _same_json(patched, change.after)
            snapshot[change.key_text] = patched
    expected = {i.key_text: i.value for i in new}
    assert snapshot.keys() == expected.keys()
    assert all(_same_json(snapshot[k], expected[k]) for k in expected)


@given(decoded_values, decoded_values)
def test_patch_turns_before_into_after(before, after):
    """make_patch/apply_patch round-trip any two JSON values, type-exactly (1, 1.0, true)."""
    assert _same_json(apply_patch(before, make_patch(before, after)), after)
    assert make_patch(before, before) == []


# -- the whole pipeline -----------------------------------------------------------------------


async def _poll_twice(state: Path, first: bytes, second: bytes) -> tuple[Any, Any, Any, Any]:
    bodies = iter([first, second])

    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=next(bodies))

    config_path = state.parent / "pollbridge.toml"
    config_path.write_text(
        f"""
[bridge]
state = "{state}"
[[sources]]
name = "api"
url = "http://api.invalid/items"
every = "1m"
items = "$.data[*]"
[[listeners]]
name = "hooks"
url = "http://127.0.0.1:9/"
"""
    )
    config = load_config(config_path, env={})
    store = create_store(config.state_location)
    await store.open()
    try:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            pipeline = Pipeline(config, store, Poller(client), clock=lambda: datetime.now(UTC))
            source = config.sources[0]
            baseline = await pipeline.poll(source)
            before = await store.load_hashes("api")
            outcome = await pipeline.poll(source)
            after = await store.load_hashes("api")
    finally:
        await store.close()
    return baseline, before, outcome, after


@settings(max_examples=60)
@given(body=api_bodies())
def test_pipeline_on_any_body_commits_exactly_or_nothing(body):
    """Through Poller + Pipeline + SQLite: a bad body is a PollError with no trace; a good one diffs."""
    good = orjson.dumps({"data": [{"id": 1, "v": 1}, {"id": 2, "v": 2}]})
    with tempfile.TemporaryDirectory() as tmp:
        baseline, before, outcome, after = asyncio.run(_poll_twice(Path(tmp) / "s.db", good, body))
    assert baseline.ok
    if not outcome.ok:
        assert outcome.error and outcome.error.startswith("poll of source 'api'")
        assert outcome.events == []
        assert after == before
    else:
        assert after.hashes.keys() == {
            i.key_text for i in extract_items(parse_document(body, "json"), SPECS[0])
        }
        assert len(outcome.events) == len(outcome.changes)


# -- configuration files ----------------------------------------------------------------------

_good_values: dict[str, list[Any]] = {
    "name": ["orders", "a-b_1", "", "bad name"],
    "url": ["http://127.0.0.1:1/x", "https://example.com/api?x=1", "ftp://x", "http://", "x"],
    "every": ["30s", "1h30m", "0s", "-1s", 1e300, 5, "soon", True],
    "cron": ["*/5 * * * *", "61 * * * *", "* * *", ""],
    "jitter": ["5s", "99999999999d", 2**70],
    "timeout": ["10s", "0ms", -3, 1e308],
    "method": ["GET", "POST", "get", "DELETE"],
    "body": [{"q": 1}, [1, 2], "x"],
    "headers": [{"authorization": "Bearer ${TOKEN}"}, {"x": 1}, "h"],
    "params": [{"page": 1, "all": True}, {"x": [1]}],
    "items": ["$.data[*]", "$[*]", "$..x", "data", "$[", "$.a[?(@.b > 1)]"],
    "key": ["$.id", ["$.a", "$.b"], [], "$[", 3],
    "ignore": [["$.seen"], ["$["], "x"],
    "fields": [["$.a.b"], ["$..a"], ["$[0]"]],
    "baseline": ["silent", "emit", "loud"],
    "max_bytes": ["1MiB", "32MB", 0, -1, "12 parsecs", 2**80, "99999999999999999999GiB"],
    "ca_file": ["/nonexistent/ca.pem", "relative.pem", "/", "/etc/hostname"],
    "tls_verify": [True, False, "no"],
    "secret": ["whsec_" + "A" * 40, "whsec_!!", "nope", "whsec_" + "QUFB" * 5],
    "events": [["created"], [], ["moved"]],
    "retry": [["1s", "2s"], [], ["x"], [1e300]],
    "max_in_flight": [1, 0, 5000, "many"],
    "sources": [["orders"], ["unknown"], []],
}
_bridge_values: dict[str, list[Any]] = {
    "state": ["state.db", "/var/lib/pollbridge/x.db", "postgresql://u@h/db", ""],
    "log_level": ["info", "DEBUG", "loud"],
    "shutdown_grace": ["10s", "x", 1e300],
    "deny_private_targets": [True, False, "maybe"],
}


def _entry(keys: dict[str, list[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(
        st.sampled_from(sorted(keys)) | st.sampled_from(["unknown_key"]),
        st.just(None),
        max_size=len(keys),
    ).flatmap(
        lambda chosen: st.fixed_dictionaries(
            {
                k: st.sampled_from(keys.get(k, [1]))
                | (json_values if k == "body" else st.nothing())
                for k in chosen
            }
        )
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if not isinstance(value, float) or value == value else "nan"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return '""'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return (
        "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    )


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=80))
    lines = []
    bridge = draw(_entry(_bridge_values))
    if bridge:
        lines.append("[bridge]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in bridge.items()]
    for table in ("sources", "listeners"):
        for _ in range(draw(st.integers(0, 2))):
            base = {"name": "orders", "url": "http://127.0.0.1:1/x"}
            if table == "sources":
                base["every"] = "30s"
            entry = {**base, **draw(_entry(_good_values))}
            lines.append(f"[[{table}]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 4)) == 0:
        text = _mutate(text.encode(), draw(st.data())).decode("utf-8", "replace")
    return text.encode()


@settings(max_examples=200)
@given(config_files(), st.sampled_from([{}, {"TOKEN": "s3cret-token"}]))
def test_any_config_file_loads_or_fails_with_config_error(text, env):
    """load_config on any file gives a Config or a ConfigError naming the file; nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pollbridge.toml"
        path.write_bytes(text)
        try:
            config = load_config(path, env=env)
        except ConfigError as exc:
            assert str(path) in str(exc)
            return
        summary = "\n".join(iter_summary(config))
    assert "s3cret-token" not in summary
    assert all(f"- {s.name}:" in summary for s in config.sources)


@pytest.mark.parametrize(
    "text",
    [
        '[[sources]]\nname = "x"\nurl = "http://h/"\nevery = 1e300\n',
        "[bridge]\nshutdown_grace = 1e300\n",
        '[[sources]]\nname = "x"\nurl = "http://h/"\nevery = "99999999999999999999d"\n',
        '[[sources]]\nname = "x"\nurl = "http://h/"\nevery = inf\n',
        '[[sources]]\nname = "x"\nurl = "http://h/"\nevery = nan\n',
    ],
)
def test_overflowing_numbers_are_config_errors(tmp_path, text):
    """Durations and sizes too large for Python's timedelta are a ConfigError, not a crash."""
    path = tmp_path / "pollbridge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path, env={})
