"""bridge/console/sparkline.py: bucketing samples and drawing them as an SVG bar chart."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from bridge.console.sparkline import (
    Buckets,
    bucket_counts,
    delivery_outcome,
    legend,
    poll_outcome,
    sparkline_svg,
)

START = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SVG = "{http://www.w3.org/2000/svg}"


def test_samples_fall_into_their_hour_and_outside_ones_are_dropped():
    """Each sample counts in the bucket its time falls in; before the start or after the last
    bucket it is left out; an unknown outcome counts as warn."""
    samples = [
        (START, "ok"),
        (START + timedelta(minutes=59), "ok"),
        (START + HOUR, "bad"),
        (START + 23 * HOUR + timedelta(minutes=30), "strange"),
        (START - timedelta(seconds=1), "ok"),
        (START + 24 * HOUR, "ok"),
    ]
    buckets = bucket_counts(samples, START, HOUR, 24)
    assert buckets.counts[0] == {"ok": 2}
    assert buckets.counts[1] == {"bad": 1}
    assert buckets.counts[23] == {"warn": 1}
    assert buckets.total == 4
    assert [buckets.outcome_total(o) for o in ("ok", "warn", "bad")] == [2, 1, 1]


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - our own output


def test_bars_scale_to_the_busiest_bucket_and_stack_by_outcome():
    """The busiest bucket fills the height; a bucket's bars stack ok, warn, bad upwards; an
    empty bucket draws nothing; each bar group has a tooltip with its time and counts."""
    counts = [{} for _ in range(4)]
    counts[0] = {"ok": 4}
    counts[2] = {"ok": 1, "bad": 1}
    svg = sparkline_svg(
        Buckets(START, HOUR, tuple(counts)), label="polls", width_px=40, height_px=21
    )
    root = _parse(svg)
    assert root.get("aria-label") == "polls" and root.get("role") == "img"
    groups = root.findall(f"{SVG}g")
    assert len(groups) == 2  # buckets 0 and 2
    full = groups[0].findall(f"{SVG}rect")
    assert len(full) == 1 and float(full[0].get("height")) == pytest.approx(20.0)
    assert groups[0].find(f"{SVG}title").text == "00:00Z: 4 ok"
    ok, bad = groups[1].findall(f"{SVG}rect")
    assert float(ok.get("height")) == pytest.approx(5.0)
    assert float(bad.get("y")) < float(ok.get("y"))  # bad sits on top of ok
    assert bad.get("fill") != ok.get("fill")
    assert float(groups[1].findall(f"{SVG}rect")[0].get("x")) == pytest.approx(20.5)


def test_an_empty_chart_and_escaping():
    """No samples: a baseline only; a label with markup is escaped, tooltips use the names."""
    svg = sparkline_svg(
        bucket_counts([], START, HOUR, 24), label='<b>"x"</b>', names={"ok": "delivered"}
    )
    root = _parse(svg)
    assert root.findall(f"{SVG}rect") == [] and root.find(f"{SVG}line") is not None
    assert "<b>" not in svg and root.get("aria-label") == '<b>"x"</b>'
    named = sparkline_svg(
        bucket_counts([(START, "ok")], START, HOUR, 1), label="d", names={"ok": "delivered"}
    )
    assert re.search(r"<title>00:00Z: 1 delivered</title>", named)


@pytest.mark.parametrize(
    ("result", "ok", "outcome"),
    [
        ("ok", True, "ok"),
        ("unchanged", True, "ok"),
        ("held", True, "warn"),
        ("error", False, "bad"),
    ],
)
def test_poll_outcomes(result, ok, outcome):
    """Failed polls are bad, held ones warn, the rest ok."""
    assert poll_outcome(result, ok) == outcome


@pytest.mark.parametrize(
    ("state", "outcome"),
    [("delivered", "ok"), ("coalesced", "ok"), ("pending", "warn"), ("dead", "bad")],
)
def test_delivery_outcomes(state, outcome):
    """Dead deliveries are bad, pending ones warn, delivered (or merged) ones ok."""
    assert delivery_outcome(state) == outcome


def test_legend_leaves_out_zeros():
    """The text beside a sparkline names only what happened."""
    assert legend([("ok", 3), ("held", 0), ("failed", 1)]) == "3 ok, 1 failed"
    assert legend([("ok", 0)]) == "nothing in 24 h"
