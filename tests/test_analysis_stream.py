"""The worker's item-by-item parse gives exactly what the whole-document parse gives: the same
items, keys, hashes and plan, or the same error."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.analysis_worker import Job, analyse_job
from bridge.core.analysis import Planned

STREAM, WHOLE = 0, 1 << 40


def _job(path: Path, stream_min_bytes: int, items: str = "$.data[*]", **extra: Any) -> Job:
    fields: dict[str, Any] = {
        "source": "s",
        "path": str(path),
        "format": "json",
        "content_type": "application/json",
        "delimiter": ",",
        "encoding": "utf-8",
        "items": items,
        "key": ("$.id",),
        "ignore": (),
        "fields": (),
        "keep_all": False,
        "stream_min_bytes": stream_min_bytes,
    }
    fields.update(extra)
    return Job(**fields)


def _outcome(job: Job, old: dict[str, str]) -> Planned | tuple[str, str]:
    try:
        return analyse_job(job, old)
    except Exception as exc:  # the error itself is what is compared
        return type(exc).__name__, str(exc)


def _both(
    tmp_path: Path, body: bytes, old: dict[str, str] | None = None, **job: Any
) -> tuple[Any, Any]:
    path = tmp_path / "body.json"
    path.write_bytes(body)
    old = old or {}
    return _outcome(_job(path, STREAM, **job), old), _outcome(_job(path, WHOLE, **job), old)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(json_values, max_size=12),
    dumps=st.sampled_from(["orjson", "ascii", "indent"]),
    drop=st.integers(min_value=0, max_value=3),
)
def test_streamed_and_whole_document_agree(
    tmp_path: Path, values: list[Any], dumps: str, drop: int
) -> None:
    """Any items, written by any JSON encoder, give the same plan streamed as whole."""
    import json

    items = [{"id": f"k{i}", "v": v} for i, v in enumerate(values)]
    doc = {"meta": {"n": len(items)}, "data": items}
    if dumps == "orjson":
        body = orjson.dumps(doc)
    elif dumps == "ascii":
        body = json.dumps(doc, ensure_ascii=True).encode()
    else:
        body = json.dumps(doc, indent=2, ensure_ascii=False).encode()
    old = {f"k{i}": "0" * 32 for i in range(drop, drop + 5)}
    streamed, whole = _both(tmp_path, body, old)
    assert streamed == whole


EDGES = {
    "byte order mark": codecs.BOM_UTF8 + b'{"data": [{"id": "a"}]}',
    "integer beyond 64 bits": b'{"data": [{"id": "a", "n": 123456789012345678901234}]}',
    "large integer in range": b'{"data": [{"id": "a", "n": 18446744073709551615}]}',
    "oversized integer outside the items": b'{"n": 123456789012345678901234, "data": [{"id": "a"}]}',
    "lone escaped surrogate": b'{"data": [{"id": "a", "s": "\\ud800"}]}',
    "escaped surrogate pair": b'{"data": [{"id": "a", "s": "\\ud83d\\ude00"}]}',
    "missing array": b'{"other": []}',
    "empty array": b'{"data": []}',
    "not an array": b'{"data": {"id": "a"}}',
    "trailing garbage": b'{"data": [{"id": "a"}]} x',
    "truncated": b'{"data": [{"id": "a"}, {"id": "b"',
    "invalid UTF-8": b'{"data": [{"id": "a", "s": "\xff"}]}',
    "repeated key": b'{"data": [{"id": "a"}, {"id": "a"}]}',
    "missing key": b'{"data": [{"id": "a"}, {"x": 1}]}',
    "numeric keys": b'{"data": [{"id": 1}, {"id": 2.5}, {"id": -0}]}',
    "float forms": b'{"data": [{"id": "a", "f": [1e5, 1E-7, -0.0, 0.1, 1.0, 5e-324]}]}',
    "infinite float": b'{"data": [{"id": "a", "f": 1e400}]}',
    "NaN": b'{"data": [{"id": "a", "f": NaN}]}',
    "deep nesting": b'{"data": [{"id": "a", "v": ' + b"[" * 300 + b"]" * 300 + b"}]}",
    "whitespace": b' \n{ "data" :\t[ { "id" : "a" } ] }\r\n',
    "items not objects": b'{"data": [1, 2]}',
}


@pytest.mark.parametrize("body", EDGES.values(), ids=EDGES.keys())
def test_edge_cases_agree(tmp_path: Path, body: bytes) -> None:
    """Bodies the stream cannot take as they are still end exactly as the whole document."""
    streamed, whole = _both(tmp_path, body, {"z": "0" * 32})
    assert streamed == whole


@pytest.mark.parametrize(
    ("items", "body"),
    [
        ("$[*]", b'[{"id": "a"}, {"id": "b"}]'),
        ("$.a.b[*]", b'{"a": {"b": [{"id": "a"}], "c": 1}}'),
        ("$['a.b'][*]", b'{"a.b": [{"id": "a"}]}'),
        ("$.data", b'{"data": [{"id": "a"}]}'),
        ("$.data[?(@.id == 'b')]", b'{"data": [{"id": "a"}, {"id": "b"}]}'),
    ],
)
def test_item_paths_agree(tmp_path: Path, items: str, body: bytes) -> None:
    """Streamable shapes and the others (whole-document only) give the same items."""
    streamed, whole = _both(tmp_path, body, items=items, keep_all=True)
    assert isinstance(streamed, Planned) and streamed.item_count >= 1
    assert streamed == whole


def test_ignore_and_fields_agree(tmp_path: Path) -> None:
    """``ignore`` and ``fields`` shape the hashed item the same way in both parses."""
    body = orjson.dumps(
        {"data": [{"id": str(i), "a": i, "b": {"c": i, "d": "x"}} for i in range(50)]}
    )
    for extra in ({"ignore": ("$.b.d",)}, {"fields": ("$.id", "$.b.c")}):
        streamed, whole = _both(tmp_path, body, **extra, keep_all=True)
        assert isinstance(streamed, Planned) and streamed == whole


@pytest.mark.parametrize(
    ("items", "body"),
    [
        ("$[*]", b'[{"id": "a"}, {"id": "b"}]'),
        ("$.a.b[*]", b'{"a": {"b": [{"id": "a"}], "c": [1, 2]}, "z": {"b": [3]}}'),
    ],
)
def test_a_streamable_body_is_never_decoded_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, items: str, body: bytes
) -> None:
    """For ``$[*]`` and ``$.a.b[*]`` the items are parsed one by one, never as one document."""
    import bridge.analysis_worker as worker

    def whole(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the whole document was decoded")

    monkeypatch.setattr(worker, "parse_document", whole)
    path = tmp_path / "body.json"
    path.write_bytes(body)
    planned = analyse_job(_job(path, STREAM, items=items), {})
    assert [i.key_text for i in planned.upserts] == ["a", "b"][: planned.item_count]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(json_values, max_size=12),
    dumps=st.sampled_from(["orjson", "ascii", "indent"]),
    piece_bytes=st.integers(min_value=1, max_value=64),
    drop=st.integers(min_value=0, max_value=3),
)
def test_an_array_parsed_in_pieces_agrees_with_the_whole_document(
    tmp_path: Path, values: list[Any], dumps: str, piece_bytes: int, drop: int
) -> None:
    """A top-level array cut into pieces of any size (cuts inside strings and nested values
    included) gives the same plan as one parse of the whole document."""
    import json

    # strings that look like a cut between two objects, and objects nested in objects
    items = [
        {"id": f"k{i}", "s": "},{", "v": v, "o": [{}, {"a": "} , {"}]} for i, v in enumerate(values)
    ]
    if dumps == "orjson":
        body = orjson.dumps(items)
    elif dumps == "ascii":
        body = json.dumps(items, ensure_ascii=True).encode()
    else:
        body = json.dumps(items, indent=2, ensure_ascii=False).encode()
    path = tmp_path / "body.json"
    path.write_bytes(body)
    old = {f"k{i}": "0" * 32 for i in range(drop, drop + 5)}
    pieces = _outcome(_job(path, WHOLE, items="$[*]", piece_bytes=piece_bytes), old)
    whole = _outcome(_job(path, WHOLE, items="$[*]", piece_bytes=0), old)
    assert pieces == whole


ARRAY_EDGES = {
    "byte order mark": codecs.BOM_UTF8 + b'[{"id": "a"}, {"id": "b"}]',
    "integer beyond 64 bits": b'[{"id": "a"}, {"id": "b", "n": 123456789012345678901234}]',
    "large integer in range": b'[{"id": "a"}, {"id": "b", "n": 18446744073709551615}]',
    "lone escaped surrogate": b'[{"id": "a"}, {"id": "b", "s": "\\ud800"}]',
    "escaped surrogate pair": b'[{"id": "a"}, {"id": "b", "s": "\\ud83d\\ude00"}]',
    "empty array": b"[]",
    "blank array": b" [ \n ] ",
    "not an array": b'{"id": "a"}',
    "trailing garbage": b'[{"id": "a"}, {"id": "b"}] x',
    "trailing bracket": b'[{"id": "a"}, {"id": "b"}]]',
    "truncated": b'[{"id": "a"}, {"id": "b"',
    "unclosed string": b'[{"id": "a"}, {"id": "b", "s": "},{"',
    "invalid UTF-8": b'[{"id": "a"}, {"id": "b", "s": "\xff"}]',
    "repeated key": b'[{"id": "a"}, {"id": "a"}]',
    "missing key": b'[{"id": "a"}, {"x": 1}]',
    "NaN": b'[{"id": "a"}, {"id": "b", "f": NaN}]',
    "deep nesting": b'[{"id": "a"}, {"id": "b", "v": ' + b"[" * 300 + b"]" * 300 + b"}]",
    "vertical tab": b'[{"id": "a"},\x0b{"id": "b"}]',
    "whitespace": b' \r\n[ {"id": "a"} ,\n\t{ "id" : "b" } ]\r\n',
    "items not objects": b"[1, 2]",
    "mixed items": b'[{"id": "a"}, 1, {"id": "b"}]',
}


@pytest.mark.parametrize("body", ARRAY_EDGES.values(), ids=ARRAY_EDGES.keys())
def test_edge_cases_agree_in_pieces(tmp_path: Path, body: bytes) -> None:
    """Top-level arrays the pieces cannot take as they are end exactly as the whole document."""
    path = tmp_path / "body.json"
    path.write_bytes(body)
    old = {"z": "0" * 32}
    whole = _outcome(_job(path, WHOLE, items="$[*]", piece_bytes=0), old)
    for piece_bytes in (1, 7, 1 << 20):
        pieces = _outcome(_job(path, WHOLE, items="$[*]", piece_bytes=piece_bytes), old)
        assert pieces == whole


def test_an_array_is_parsed_in_pieces_not_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``$[*]`` body of many pieces is never decoded as one document, whatever its size."""
    import bridge.analysis_worker as worker

    def whole(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the whole document was decoded")

    monkeypatch.setattr(worker, "parse_document", whole)
    path = tmp_path / "body.json"
    # a few strings that look like a cut between two objects: those cuts are tried and passed
    items = [{"id": str(i), "s": "},{" if i % 100 == 7 else ""} for i in range(1000)]
    path.write_bytes(orjson.dumps(items))
    planned = analyse_job(_job(path, WHOLE, items="$[*]", piece_bytes=100), {"x": "0" * 32})
    assert planned.item_count == 1000
    assert planned.plan.deleted == ["x"]
    assert [i.key_text for i in planned.upserts] == [str(i) for i in range(1000)]


def test_a_cut_inside_a_string_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first brace pair past a piece's size is inside a string: the next one is taken, and
    the body is still read in pieces, with every item as it is."""
    import bridge.analysis_worker as worker

    def whole(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the whole document was decoded")

    monkeypatch.setattr(worker, "parse_document", whole)
    tricky = {"pad": "x" * 70, "s": "},{", "id": "0"}  # its "},{" lies past byte 64
    items = [tricky, *({"id": str(i)} for i in range(1, 200))]
    path = tmp_path / "body.json"
    path.write_bytes(orjson.dumps(items))
    planned = analyse_job(_job(path, WHOLE, items="$[*]", piece_bytes=64), {}, None)
    assert planned.item_count == 200
    assert [i.value for i in planned.upserts] == items
