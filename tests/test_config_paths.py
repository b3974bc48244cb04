"""An invalid JSONPath stops `pollbridge check` with exit 78 (EX_CONFIG), naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import run_cli


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("items", '"$.1"', "must start with a letter or '_'"),
        ("key", '"$[-0]"', "no -0"),
        ("ignore", "[\"$['a','b']\"]", "a known limitation"),
    ],
)
def test_invalid_jsonpath_exits_78_naming_the_field(
    tmp_path: Path, field: str, value: str, reason: str
) -> None:
    """A path RFC 9535 refuses (or pollbridge does not support) is a config error, not a poll."""
    path = tmp_path / "pollbridge.toml"
    path.write_text(
        f'[[sources]]\nname = "orders"\nurl = "https://x.example/"\nevery = "1m"\n{field} = {value}\n'
    )
    res = run_cli("check", "--config", str(path))
    assert res.returncode == 78, res.stderr
    assert f"field {field}" in res.stderr
    assert reason in res.stderr
    assert "Traceback" not in res.stderr
