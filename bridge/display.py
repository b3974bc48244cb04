"""Plain-text tables and human times for the CLI and the console (scripts use ``--json``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

MAX_CELL = 60


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, max_cell: int = MAX_CELL
) -> str:
    """Left-aligned columns separated by two spaces; long cells end with ``…``."""
    cells = [[_cell(v, max_cell) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cell(value: Any, max_cell: int) -> str:
    text = "-" if value is None or value == "" else " ".join(str(value).split())
    return text if len(text) <= max_cell else text[: max_cell - 1] + "…"


def ago(moment: datetime | None, now: datetime) -> str:
    """``12s ago``; ``in 3m`` for a future time; ``-`` for none."""
    if moment is None:
        return "-"
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        return f"in {span(-seconds)}"
    return f"{span(seconds)} ago"


def until(moment: datetime | None, now: datetime) -> str:
    """``in 18s``; ``due`` when the time has come; ``-`` for none."""
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    return "due" if seconds <= 0 else f"in {span(seconds)}"


def span(seconds: float, *, spaced: bool = False) -> str:
    """A rough, short duration: ``850ms``, ``12s``, ``3m``, ``2h5m``, ``4d``; ``spaced`` for
    prose (the console): ``850 ms``, ``12 s``, ``3 min``, ``2 h 5 min``, ``4 d``."""
    sep, minutes = (" ", "min") if spaced else ("", "m")
    if seconds < 1:
        return f"{seconds * 1000:.0f}{sep}ms"
    if seconds < 60:
        return f"{seconds:.0f}{sep}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}{sep}{minutes}"
    if seconds < 86400:
        hours, rest = divmod(int(seconds), 3600)
        if rest < 60:
            return f"{hours}{sep}h"
        return f"{hours}{sep}h{sep}{rest // 60}{sep}{minutes}"
    return f"{seconds // 86400:.0f}{sep}d"


def stamp(moment: datetime | None) -> str:
    """A compact local-independent time: ``2026-11-23 12:00:05Z``."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def dumps(value: Any) -> str:
    """Indented JSON for ``--json`` output (datetimes as RFC 3339)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


def compact(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
