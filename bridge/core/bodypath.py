"""Dotted paths into a JSON request body (``variables.after``): parse once, set a value.

A request body is configuration; a poll never changes it in place. Setting a value returns a new
body that shares nothing mutable with the old one along the path it changed.
"""

from __future__ import annotations

from typing import Any


class BodyPathError(ValueError):
    """A dotted body path that is malformed or cannot be set in the given body."""


def parse_body_path(text: str) -> tuple[str, ...]:
    """The member names of a dotted path such as ``variables.after``.

    Names are non-empty and contain no ``.``; surrounding spaces are not allowed, so what is
    written is exactly the member that is set.
    """
    if not isinstance(text, str) or not text:
        raise BodyPathError("a body path must be a non-empty dotted path such as variables.after")
    names = tuple(text.split("."))
    for name in names:
        if not name or name != name.strip():
            raise BodyPathError(
                f"body path {text!r} is not a dotted path of member names (e.g. variables.after)"
            )
    return names


def with_body_value(body: Any, path: str | tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of the JSON object ``body`` with ``value`` set at the dotted ``path``.

    Missing objects along the path are created (``None`` counts as missing: GraphQL's
    ``variables`` may be null). A member on the path that holds something other than an object
    cannot take a member of its own: that raises BodyPathError.
    """
    names = parse_body_path(path) if isinstance(path, str) else path
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise BodyPathError(
            f"body path {'.'.join(names)!r} needs a JSON object body, got {_kind(body)}"
        )
    out = dict(body)
    node = out
    for depth, name in enumerate(names[:-1]):
        child = node.get(name)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            where = ".".join(names[: depth + 1])
            raise BodyPathError(
                f"body path {'.'.join(names)!r}: {where!r} is {_kind(child)}, not an object"
            )
        else:
            child = dict(child)
        node[name] = child
        node = child
    node[names[-1]] = value
    return out


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "null" if value is None else "an object"
