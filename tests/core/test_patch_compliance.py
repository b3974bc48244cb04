"""A vendored subset of the json-patch-tests RFC 6902 suite (tests/data/jsonpatch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.core.hashing import canonical_json
from bridge.core.patch import apply_patch, make_patch

_CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "data" / "jsonpatch" / "rfc6902_subset.json").read_text("utf-8")
)["tests"]


@pytest.mark.parametrize("case", _CASES, ids=[c["comment"] or str(i) for i, c in enumerate(_CASES)])
def test_suite_patch_applies_to_the_expected_document(case: dict[str, Any]) -> None:
    """apply_patch gives the suite's expected document for its add/remove/replace patches."""
    got = apply_patch(case["doc"], case["patch"])
    assert canonical_json(got) == canonical_json(case["expected"])


@pytest.mark.parametrize("case", _CASES, ids=[c["comment"] or str(i) for i, c in enumerate(_CASES)])
def test_patch_computed_between_suite_documents_applies(case: dict[str, Any]) -> None:
    """The patch make_patch computes from doc to expected uses only add/remove/replace and applies."""
    patch = make_patch(case["doc"], case["expected"])
    assert {op["op"] for op in patch} <= {"add", "remove", "replace"}
    got = apply_patch(case["doc"], patch)
    assert canonical_json(got) == canonical_json(case["expected"])
