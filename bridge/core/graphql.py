"""GraphQL over HTTP: the request body and the ``errors`` array of a response.

The standard POST form: ``{"query": ..., "variables": {...}}`` as ``application/json``. A
response may answer 200 and still carry ``errors``; such a response is not a list of items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MESSAGE_LIMIT = 300


def graphql_body(query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a GraphQL request."""
    return {"query": query, "variables": dict(variables)}


def graphql_error(doc: Any) -> str | None:
    """What a response's non-empty ``errors`` array says, or None when it has none.

    The first error's ``message`` is quoted, with its ``path`` (``repository.issues``) when
    it has one, and how many more errors there were.
    """
    if not isinstance(doc, dict):
        return None
    errors = doc.get("errors")
    if errors is None or errors == []:
        return None
    if not isinstance(errors, list):
        return f"the response's 'errors' is not an array: {_clip(repr(errors))}"
    first = errors[0]
    message: Any = first.get("message") if isinstance(first, dict) else first
    text = message if isinstance(message, str) else repr(message)
    out = f"GraphQL error: {_clip(text)!r}"
    path = first.get("path") if isinstance(first, dict) else None
    if isinstance(path, list) and path:
        out += f" at path {'.'.join(str(p) for p in path)}"
    if len(errors) > 1:
        out += f" (and {len(errors) - 1} more error(s))"
    return out


def _clip(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "…"
