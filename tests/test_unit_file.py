"""systemd/pollbridge.service: hardened (exposure <= 1.5) and clean for systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "pollbridge.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def test_unit_has_the_service_contract():
    """notify + watchdog, reload by SIGHUP, no restart on a config error, dynamic user, dirs."""
    keys = _keys()
    assert keys["Type"] == ["notify"]
    assert keys["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert keys["Restart"] == ["on-failure"]
    assert keys["RestartPreventExitStatus"] == ["78"]
    assert keys["DynamicUser"] == ["yes"]
    assert keys["StateDirectory"] == ["pollbridge"]
    assert keys["ConfigurationDirectory"] == ["pollbridge"]
    assert re.fullmatch(r"\d+s", keys["WatchdogSec"][0])
    assert "run --config /etc/pollbridge/pollbridge.toml" in keys["ExecStart"][0]
    assert "#LoadCredential=" in UNIT.read_text()


@needs_analyze
def test_security_exposure_is_at_most_1_5():
    """systemd-analyze security --offline=true rates the unit 1.5 or better."""
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for pollbridge.service: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.5, result.stdout


@needs_analyze
def test_verify_is_clean(tmp_path):
    """systemd-analyze verify reports nothing (ExecStart pointed at an executable that exists
    here, since /opt/pollbridge is not installed on a test machine)."""
    program = tmp_path / "pollbridge"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / "pollbridge.service"
    unit.write_text(UNIT.read_text().replace("/opt/pollbridge/bin/pollbridge", str(program)))
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""
