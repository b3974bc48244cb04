"""Write pollbridge configurations for tests: one writer instead of a TOML template per file.

Most tests need the same shape: a ``[bridge]`` table with the state, one polled source and a
listener or two. :func:`write_config` writes it; :func:`source` and :func:`listener` build one
table each from keyword fields (rendered as TOML values) plus ``raw`` TOML lines for what a test
wants to spell out exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_BARE_KEY = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def toml_value(value: Any) -> str:
    """``value`` as a TOML value: strings, numbers, booleans, lists and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def toml_key(key: str) -> str:
    return key if key and set(key) <= _BARE_KEY else json.dumps(key)


def table(header: str, fields: dict[str, Any], raw: str = "") -> str:
    """``[header]`` (or ``[[header]]`` when given so) with ``fields`` and ``raw`` TOML lines."""
    lines = [header]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in fields.items() if v is not None]
    if raw.strip():
        lines.append(raw.strip("\n"))
    return "\n".join(lines) + "\n"


def source(
    name: str,
    url: str,
    *,
    every: str = "200ms",
    items: str | None = "$.data[*]",
    raw: str = "",
    **fields: Any,
) -> str:
    """One ``[[sources]]`` table; ``fields`` are further keys (``baseline="emit"``, ...)."""
    return table(
        "[[sources]]", {"name": name, "url": url, "every": every, "items": items, **fields}, raw
    )


def idle_source(name: str = "idle") -> str:
    """A source that is never due while a test runs (a configuration needs one)."""
    return source(name, "https://api.example.com/idle", every=None, items=None, cron="0 0 1 1 *")


def listener(name: str, url: str, *, raw: str = "", **fields: Any) -> str:
    """One ``[[listeners]]`` table; ``fields`` are further keys (``retry=[...]``, ...)."""
    return table("[[listeners]]", {"name": name, "url": url, **fields}, raw)


def oauth2(token_url: str, client_id: str, client_secret: str, **fields: Any) -> dict[str, Any]:
    """A source's ``auth`` table for OAuth2 client credentials (``fields``: scope, ...)."""
    return {
        "kind": "oauth2",
        "token_url": token_url,
        "client_id": client_id,
        "client_secret": client_secret,
        **fields,
    }


def config_text(
    state: str | Path,
    *tables: str,
    shutdown_grace: str | None = "3s",
    bridge: str = "",
    **bridge_fields: Any,
) -> str:
    """A whole configuration: ``[bridge]`` (state, shutdown_grace, ``bridge_fields`` and the
    ``bridge`` raw lines), then ``tables`` in order."""
    head = table(
        "[bridge]",
        {"state": str(state), "shutdown_grace": shutdown_grace, **bridge_fields},
        bridge,
    )
    return "\n".join([head, *tables])


def write_config(
    path: Path,
    *tables: str,
    state: str | Path | None = None,
    shutdown_grace: str | None = "3s",
    bridge: str = "",
    **bridge_fields: Any,
) -> Path:
    """Write :func:`config_text` to ``path`` (the state defaults to ``state.db`` beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        config_text(
            state if state is not None else path.parent / "state.db",
            *tables,
            shutdown_grace=shutdown_grace,
            bridge=bridge,
            **bridge_fields,
        )
    )
    return path
