"""A vendored subset of the RFC 9535 JSONPath Compliance Test Suite (tests/data/jsonpath)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.core.paths import compile_path

_CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "data" / "jsonpath" / "cts_subset.json").read_text("utf-8")
)["tests"]

LIMITATION = "not supported by pollbridge (a known limitation)"


def _outcome(case: dict[str, Any]) -> str:
    """What pollbridge does with one case: pass, refused-by-design, or a description of the miss."""
    try:
        path = compile_path(case["selector"])
    except ValueError as exc:
        if case.get("invalid_selector"):
            return "pass"
        return "refused-by-design" if LIMITATION in str(exc) else f"refused: {exc}"
    if case.get("invalid_selector"):
        return "accepted an invalid selector"
    found = path.find(case["document"])
    results = [case["result"]] if "result" in case else case["results"]
    return "pass" if found in results else f"found {found!r}"


@pytest.mark.parametrize("case", _CASES, ids=[c["name"] for c in _CASES])
def test_compliance_case(case: dict[str, Any]) -> None:
    """Each case gives the suite's result, or is refused as a documented limitation."""
    assert _outcome(case) in ("pass", "refused-by-design")


def test_only_unions_negation_and_functions_are_refused_by_design() -> None:
    """The subset's refused cases are the unions, '!' and functions in filters, and are few."""
    refused = [c for c in _CASES if _outcome(c) == "refused-by-design"]
    for case in refused:
        with pytest.raises(ValueError, match=r"unions of selectors|'!' \(not\)|function ext"):
            compile_path(case["selector"])
    passed = sum(_outcome(c) == "pass" for c in _CASES)
    assert passed + len(refused) == len(_CASES)
    assert len(refused) <= 40 < passed
