"""Keying and hashing items a batch at a time gives what one item at a time gives: the same
keys, hashes and values, or the same error naming the same items."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.extract import ExtractionFailed, ItemSpec, iter_keyed
from bridge.core.hashing import hash_item
from bridge.core.paths import compile_path

SPEC = ItemSpec(compile_path("$[*]"), (compile_path("$.id"),))


def _one_by_one(raw: list[Any]) -> list[tuple[Any, ...]] | str:
    """The rule, written plainly: a string (or integer) key at ``$.id``, never twice, an item
    that can be sent."""
    seen: dict[str, int] = {}
    out: list[tuple[Any, ...]] = []
    for index, value in enumerate(raw):
        key = value.get("id") if isinstance(value, dict) else None
        if type(key) is int:
            key = str(key)  # a number key is stored as its JSON text
        if not isinstance(key, str):
            return "no key"
        if key in seen:
            return f"key {key!r} appears twice in one poll (items #{seen[key]} and #{index})"
        seen[key] = index
        try:
            digest = hash_item(value)
        except TypeError:
            return f"item #{index} (key {key!r}) cannot be hashed and sent as a webhook"
        out.append((key, key, value, digest))

    return out


def _batched(raw: list[Any], batch_items: int) -> list[tuple[Any, ...]] | str:
    seen: dict[str, int] = {}
    try:
        found = list(iter_keyed(raw, SPEC, seen, batch_items))
    except ExtractionFailed as exc:
        message = str(exc)
        if "has no key" in message or "expected a string" in message:
            return "no key"
        head, webhook, _why = message.partition(" as a webhook")
        return head + webhook
    assert seen == {text: i for i, (_, text, _, _) in enumerate(found)}
    return found


items = st.one_of(
    st.fixed_dictionaries({"id": st.sampled_from(["a", "b", "c", "d", "e", "f"])}),
    st.fixed_dictionaries({"id": st.text(max_size=3), "v": st.integers()}),
    st.fixed_dictionaries({"x": st.integers()}),
    st.fixed_dictionaries({"id": st.integers(max_value=9)}),
    st.builds(lambda k: {"id": k, "deep": [[[[]]]] * 70}, st.text(min_size=4, max_size=4)),
    st.builds(lambda k: {"id": k, "deep": _nested(260)}, st.text(min_size=5, max_size=5)),
)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@settings(max_examples=300, deadline=None)
@given(raw=st.lists(items, max_size=20), batch_items=st.integers(min_value=1, max_value=8))
def test_batches_key_and_hash_as_one_item_at_a_time(raw: list[Any], batch_items: int) -> None:
    """Any batch size gives the keys, hashes and first error one item at a time gives."""
    expected = _one_by_one(raw)
    assert _batched(raw, batch_items) == expected
    assert _batched(raw, 2048) == expected
