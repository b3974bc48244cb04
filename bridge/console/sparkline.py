"""Small SVG bar charts of the last 24 hours, drawn on the server. Pure functions.

A sparkline is a row of time buckets; each bucket is a stacked bar of counts by outcome
(``ok`` at the bottom, then ``warn``, then ``bad``), so a failing hour stands out in red.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

OUTCOMES = ("ok", "warn", "bad")
"""The stacking order, bottom to top; anything else is counted as ``warn``."""

_COLOURS = {"ok": "#2f8f5b", "warn": "#d89a1c", "bad": "#c9372c"}


@dataclass(frozen=True)
class Buckets:
    """Counts by outcome per time bucket, oldest first."""

    start: datetime
    width: timedelta
    counts: tuple[Mapping[str, int], ...]

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts)

    def outcome_total(self, outcome: str) -> int:
        return sum(c.get(outcome, 0) for c in self.counts)


def bucket_counts(
    samples: Iterable[tuple[datetime, str]], start: datetime, width: timedelta, buckets: int
) -> Buckets:
    """Count ``(time, outcome)`` samples into ``buckets`` slices of ``width`` from ``start``;
    samples outside them are left out, outcomes other than ``OUTCOMES`` count as ``warn``."""
    counts: list[dict[str, int]] = [{} for _ in range(buckets)]
    for moment, outcome in samples:
        index = (moment - start) // width
        if not 0 <= index < buckets:
            continue
        kind = outcome if outcome in OUTCOMES else "warn"
        counts[index][kind] = counts[index].get(kind, 0) + 1
    return Buckets(start, width, tuple(counts))


def sparkline_svg(
    data: Buckets,
    *,
    label: str,
    width_px: int = 120,
    height_px: int = 24,
    names: Mapping[str, str] | None = None,
) -> str:
    """An inline ``<svg>`` of ``data``: bar heights scale with the busiest bucket; every bar
    has a ``<title>`` (its time and counts) for a tooltip; ``label`` is its accessible name.

    ``names`` says what each outcome is called in the tooltips (``ok`` -> ``delivered``)."""
    names = names or {}
    n = len(data.counts)
    peak = max((sum(c.values()) for c in data.counts), default=0)
    bar_w = width_px / n if n else width_px
    parts = [
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width_px}" '
        f'height="{height_px}" viewBox="0 0 {width_px} {height_px}" role="img" '
        f'aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
        f'<line x1="0" y1="{height_px - 0.5}" x2="{width_px}" y2="{height_px - 0.5}" '
        'stroke="#c8cdd3" stroke-width="1"/>',
    ]
    for i, count in enumerate(data.counts):
        total = sum(count.values())
        if total == 0:
            continue
        x = i * bar_w
        base = float(height_px)
        moment = data.start + data.width * i
        tip = f"{moment:%H:%M}Z: " + ", ".join(
            f"{count[o]} {names.get(o, o)}" for o in OUTCOMES if count.get(o)
        )
        parts.append(f"<g><title>{escape(tip)}</title>")
        for outcome in OUTCOMES:
            value = count.get(outcome, 0)
            if not value:
                continue
            h = max(1.0, (height_px - 1) * value / peak)
            base -= h
            parts.append(
                f'<rect x="{x + 0.5:.1f}" y="{base:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{_COLOURS[outcome]}"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def poll_outcome(result: str | None, ok: bool) -> str:
    """A poll's bar colour: failed polls ``bad``, held ones ``warn``, the rest ``ok``."""
    if not ok:
        return "bad"
    return "warn" if result == "held" else "ok"


def delivery_outcome(state: str) -> str:
    """A delivery's bar colour: dead ``bad``, still pending ``warn``, delivered (or merged
    into a later delivery) ``ok``."""
    if state == "dead":
        return "bad"
    return "warn" if state == "pending" else "ok"


def legend(samples: Sequence[tuple[str, int]]) -> str:
    """``3 ok, 1 failed`` from (name, count) pairs, zeros left out."""
    return ", ".join(f"{n} {name}" for name, n in samples if n) or "nothing in 24 h"
