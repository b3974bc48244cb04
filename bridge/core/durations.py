"""Durations written the way operators write them: "30s", "5m", "1h30m", "500ms", "14d"."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """Parse "30s", "5m", "1h30m", "250ms" or "2d" into a timedelta; raise ValueError otherwise."""
    s = text.strip().lower().replace(" ", "")
    if not s:
        raise ValueError("empty duration; expected a number with a unit, e.g. 30s, 5m, 1h, 2d")
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(
            f"invalid duration {text!r}; expected a number with a unit (ms, s, m, h, d), "
            "e.g. 30s, 5m, 1h30m"
        )
    try:
        return timedelta(seconds=total)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def parse_since(text: str, at: datetime) -> datetime:
    """A ``since`` filter: a duration back from ``at`` (``30m``, ``1h``, ``2d``) or an RFC 3339
    time (UTC when it names no zone). ValueError, saying what is expected, for anything else."""
    try:
        return at - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r}: expected a duration (30m, 1h, 2d) or a time (2026-11-23T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_duration(value: timedelta) -> str:
    """Render a timedelta back, exactly, in the short form parse_duration reads ("1.5s")."""
    micros = value // timedelta(microseconds=1)
    rest, fraction = divmod(micros, 1_000_000)
    if not rest and fraction:
        ms, us = divmod(fraction, 1000)
        return f"{ms}.{us:03d}".rstrip("0").rstrip(".") + "ms"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    if rest or fraction:
        out.append(f"{rest}.{fraction:06d}".rstrip("0").rstrip(".") + "s")
    return "".join(out) or "0s"
