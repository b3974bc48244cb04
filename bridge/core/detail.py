"""Detail fetch: the per-item URL, which list entries need their detail, and the detail item.

A detail source lists summaries and asks ``[sources.detail] url`` once per item whose list
entry is new or changed. The list entry's hash is remembered beside the stored (detail) item,
so an unchanged entry is never fetched again; the item itself, its hash and its payload, is
the detail.

URL placeholders: ``{id}`` or ``{user.id}`` is the member path ``$.id`` / ``$.user.id`` of the
list entry; ``{$...}`` is any JSONPath. ``{{`` and ``}}`` are literal braces. Each placeholder
must select one string or number; the value is percent-encoded (``/``, ``?`` and ``#``
included), and placeholders may appear only after the host, so list data never picks the host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from bridge.core.extract import comparable, project
from bridge.core.hashing import hash_item
from bridge.core.paths import JsonPath, compile_path
from bridge.models import Item

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


class DetailFailed(ValueError):
    """A detail URL cannot be built, or a detail response holds no single item."""


@dataclass(frozen=True)
class DetailTemplate:
    """A parsed detail URL: literal text and placeholder paths, in order."""

    text: str
    parts: tuple[str | JsonPath, ...]

    @property
    def placeholders(self) -> tuple[JsonPath, ...]:
        return tuple(p for p in self.parts if isinstance(p, JsonPath))


@dataclass(frozen=True)
class DetailSpec:
    """``[sources.detail]`` as plain values (built once at load)."""

    url: DetailTemplate
    items: JsonPath
    """Where the one item is in a detail response (``$`` for the whole body)."""
    ignore: tuple[JsonPath, ...] = ()
    fields: tuple[JsonPath, ...] = ()
    concurrency: int = 4


def parse_detail_url(text: str) -> DetailTemplate:
    """Parse a detail URL template; raise DetailFailed saying what is wrong with it."""
    parts: list[str | JsonPath] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "{}" and i + 1 < n and text[i + 1] == ch:
            literal.append(ch)
            i += 2
            continue
        if ch == "}":
            raise DetailFailed(f"unmatched '}}' at position {i} (write '}}}}' for a literal brace)")
        if ch != "{":
            literal.append(ch)
            i += 1
            continue
        end = text.find("}", i + 1)
        if end < 0:
            raise DetailFailed(f"unclosed '{{' at position {i} (write '{{{{' for a literal brace)")
        inner = text[i + 1 : end].strip()
        parts.append("".join(literal))
        literal = []
        parts.append(_placeholder_path(inner))
        i = end + 1
    parts.append("".join(literal))
    template = DetailTemplate(text, tuple(p for p in parts if p != ""))
    if not template.placeholders:
        raise DetailFailed(
            "no placeholder: every item would fetch the same URL (e.g. "
            '"https://api.example.com/orders/{id}")'
        )
    first = parts[0] if isinstance(parts[0], str) else ""
    authority = urlsplit(first)
    origin = f"{authority.scheme}://{authority.netloc}"
    after_host = first[len(origin) : len(origin) + 1]
    if not authority.netloc or not first.startswith(origin) or after_host not in ("/", "?"):
        raise DetailFailed(
            "placeholders may appear only after the host (in the path or query): "
            "list data must not choose which host is asked"
        )
    return template


def _placeholder_path(inner: str) -> JsonPath:
    if not inner:
        raise DetailFailed("an empty placeholder '{}'")
    if inner.startswith("$"):
        text = inner
    elif _NAME.fullmatch(inner):
        text = "$." + inner
    else:
        raise DetailFailed(
            f"placeholder {{{inner}}} is neither a member path such as {{id}} or {{user.id}} "
            "nor a JSONPath such as {$.user.id}"
        )
    try:
        return compile_path(text)
    except ValueError as exc:
        raise DetailFailed(f"placeholder {{{inner}}}: {exc}") from None


def sample_url(template: DetailTemplate) -> str:
    """The template with each placeholder replaced by ``1`` (to check the URL's shape)."""
    return "".join(p if isinstance(p, str) else "1" for p in template.parts)


def detail_url(template: DetailTemplate, item: Item) -> str:
    """The detail URL of a list item; raise DetailFailed when a placeholder has no value."""
    out: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        found = part.find(item.value) if isinstance(item.value, dict | list) else []
        if len(found) != 1:
            what = "no value" if not found else f"{len(found)} values"
            raise DetailFailed(
                f"item {item.key_text!r} has {what} at {part.text!r} for the detail URL"
            )
        value = found[0]
        if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
            raise DetailFailed(
                f"item {item.key_text!r}: {part.text!r} is {orjson.dumps(value).decode()[:80]}, "
                "expected a non-empty string or a number for the detail URL"
            )
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        out.append(quote(text, safe=""))
    return "".join(out)


def needs_detail(
    entries: Sequence[Item],
    stored_hashes: Mapping[str, str],
    list_hashes: Mapping[str, str],
    *,
    refetch_all: bool = False,
) -> list[Item]:
    """The list entries whose detail must be fetched: new ones, and those whose entry changed.

    ``list_hashes`` are the list entries' hashes remembered with the stored items; with
    ``refetch_all`` (a baseline or re-baseline) every entry is fetched.
    """
    if refetch_all:
        return list(entries)
    return [
        e
        for e in entries
        if e.key_text not in stored_hashes or list_hashes.get(e.key_text) != e.hash
    ]


def detail_item(entry: Item, doc: Any, spec: DetailSpec) -> Item:
    """The item a detail response gives for ``entry``: its key, the detail's value and hash.

    ``list_hash`` keeps the list entry's hash, stored beside the item for the next poll.
    """
    if spec.items.text.strip() == "$":
        found = [doc]
    else:
        found = spec.items.find(doc) if isinstance(doc, dict | list) else []
    if len(found) != 1:
        what = "nothing" if not found else f"{len(found)} values"
        raise DetailFailed(
            f"detail of item {entry.key_text!r}: detail.items {spec.items.text!r} matched {what}, "
            "expected one item"
        )
    value = found[0]
    if spec.fields:
        value = project(value, spec.fields)
    cmp = comparable(value, spec.ignore) if spec.ignore else value
    try:
        digest = hash_item(cmp)
    except TypeError as exc:
        raise DetailFailed(
            f"detail of item {entry.key_text!r} cannot be hashed and sent as a webhook: {exc}"
        ) from exc
    return Item(entry.key, entry.key_text, value, digest, entry.hash)


def merge_details(
    entries: Sequence[Item], details: Mapping[str, Item], stored_hashes: Mapping[str, str]
) -> list[Item]:
    """The poll's items in list order: the fetched details, and stand-ins for the rest.

    A stand-in carries the stored detail hash (so the diff sees it unchanged) and no value:
    it is never written, sent or compared beyond its hash.
    """
    out: list[Item] = []
    for entry in entries:
        fetched = details.get(entry.key_text)
        if fetched is not None:
            out.append(fetched)
        else:
            out.append(Item(entry.key, entry.key_text, None, stored_hashes[entry.key_text]))
    return out


def list_hash_refreshes(
    items: Sequence[Item], list_hashes: Mapping[str, str], changed: set[str]
) -> list[Item]:
    """Fetched details whose item did not change but whose list entry did.

    They are written (without an event) so the new list hash is remembered and the entry is
    not fetched again next poll.
    """
    return [
        it
        for it in items
        if it.list_hash is not None
        and it.key_text not in changed
        and list_hashes.get(it.key_text) != it.list_hash
    ]
