"""systemd/pollbridge.service and the template pollbridge@.service: hardened (exposure <= 1.5)
and clean for systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "pollbridge.service"
TEMPLATE = UNIT.with_name("pollbridge@.service")
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _keys(unit: Path = UNIT) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
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


def test_template_unit_is_the_service_without_a_state_directory():
    """pollbridge@.service (docs/scaling.md) runs like pollbridge.service: same contract and
    sandbox, no StateDirectory (the state is in PostgreSQL), the database password loaded."""
    single, template = _keys(UNIT), _keys(TEMPLATE)
    assert "StateDirectory" not in template
    for key in ("Type", "ExecStart", "ExecReload", "Restart", "RestartPreventExitStatus"):
        assert template[key] == single[key], key
    assert template["WatchdogSec"] == single["WatchdogSec"]
    assert template["LoadCredential"] == ["pg_password:/etc/pollbridge/credentials/pg-password"]
    sandbox = {k: v for k, v in single.items() if k.startswith(("Protect", "Private", "Restrict"))}
    assert {k: template.get(k) for k in sandbox} == sandbox


@needs_analyze
@pytest.mark.parametrize("unit", [UNIT, TEMPLATE], ids=["service", "template"])
def test_security_exposure_is_at_most_1_5(unit: Path, tmp_path: Path):
    """systemd-analyze security --offline=true rates the unit 1.5 or better."""
    instance = tmp_path / unit.name.replace("@.", "@1.")
    instance.write_text(unit.read_text())
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(instance)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+\.service: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.5, result.stdout


@needs_analyze
@pytest.mark.parametrize("unit_file", [UNIT, TEMPLATE], ids=["service", "template"])
def test_verify_is_clean(tmp_path: Path, unit_file: Path):
    """systemd-analyze verify reports nothing (ExecStart pointed at an executable that exists
    here, since /opt/pollbridge is not installed on a test machine)."""
    program = tmp_path / "pollbridge"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / unit_file.name.replace("@.", "@1.")
    unit.write_text(unit_file.read_text().replace("/opt/pollbridge/bin/pollbridge", str(program)))
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


@pytest.mark.parametrize("unit", [UNIT, TEMPLATE], ids=["service", "template"])
def test_unit_points_to_its_documentation(unit: Path):
    """Documentation= names the installed copy of a page that docs/ has (systemctl help)."""
    uris = [uri for value in _keys(unit).get("Documentation", []) for uri in value.split()]
    assert uris, "no Documentation="
    docs = Path(__file__).resolve().parents[1] / "docs"
    for uri in uris:
        assert uri.startswith("file:///usr/share/doc/pollbridge/"), uri
        assert (docs / uri.removeprefix("file:///usr/share/doc/pollbridge/")).is_file(), uri
