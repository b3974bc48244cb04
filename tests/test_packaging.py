"""Packaging: the sdist carries the license and the docs, the wheel the license and py.typed,
and building them warns about nothing (an SPDX license string, no stale package data)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from bridge import __version__

ROOT = Path(__file__).resolve().parents[1]
# what a checkout may hold besides the project's own files
_NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "build",
    "dist",
    "*.db*",
)
# the installed setuptools, without an isolated build environment: no network needed
_BUILD = (
    "import sys\n"
    "from setuptools import build_meta\n"
    "print('built:', getattr(build_meta, 'build_' + sys.argv[1])(sys.argv[2]))\n"
)


def _build(kind: str, tmp_path: Path) -> tuple[Path, str]:
    tree, out = tmp_path / "tree", tmp_path / "out"
    if not tree.exists():
        shutil.copytree(ROOT, tree, ignore=_NOT_SOURCES)
    out.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", _BUILD, kind, str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    built = [line for line in result.stdout.splitlines() if line.startswith("built: ")]
    assert len(built) == 1, log
    return out / built[0].removeprefix("built: "), log


def _warnings(log: str) -> list[str]:
    """The Python warnings (``file:line: SomeWarning: ...``) the build emitted."""
    return re.findall(r"^.*\b\w*Warning: .*$", log, re.MULTILINE)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _build("sdist", tmp_path_factory.mktemp("sdist"))


def test_sdist_has_the_license_docs_and_deploy_files(sdist: tuple[Path, str]):
    """Every file of docs/, the LICENSE, the units, the alert rules and the dashboard."""
    path, _ = sdist
    top = f"pollbridge-{__version__}"
    with tarfile.open(path) as archive:
        names = set(archive.getnames())
        pkg_info = archive.extractfile(f"{top}/PKG-INFO")
        assert pkg_info is not None
        metadata = pkg_info.read().decode()
    wanted = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "docs").rglob("*.md"))]
    wanted += [
        "LICENSE",
        "README.md",
        "systemd/pollbridge.service",
        "systemd/pollbridge@.service",
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
        "deploy/grafana/pollbridge.json",
        "config/example.toml",
    ]
    assert [w for w in wanted if f"{top}/{w}" not in names] == []
    assert "License-Expression: MIT" in metadata
    assert "License-File: LICENSE" in metadata


def test_building_warns_about_nothing(sdist: tuple[Path, str]):
    """No deprecation warning (a license table) and no warning at all from the build."""
    _, log = sdist
    assert _warnings(log) == []


def test_wheel_has_the_license_and_py_typed(tmp_path: Path):
    """The wheel carries bridge/py.typed and the LICENSE in its metadata, and no warning."""
    path, log = _build("wheel", tmp_path)
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"pollbridge-{__version__}.dist-info/METADATA").decode()
    assert "bridge/py.typed" in names
    assert f"pollbridge-{__version__}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: MIT" in metadata
    assert _warnings(log) == []


def test_every_package_data_pattern_matches_a_file():
    """A package-data glob that matches nothing is a leftover (it was templates/*)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = config["tool"]["setuptools"]["package-data"]
    unmatched = [
        f"{package}: {pattern}"
        for package, patterns in package_data.items()
        for pattern in patterns
        if not list((ROOT / package.replace(".", "/")).glob(pattern))
    ]
    assert unmatched == []
