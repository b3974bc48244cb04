#!/usr/bin/env python3
"""Set up a virtualenv and run pollbridge's main job or its test suite.

    python3 dev.py demo    # offline demo: an example API -> pollbridge -> a webhook receiver
    python3 dev.py test    # ruff, mypy --strict and the whole pytest suite

Needs only Python >= 3.11; everything else is installed into ./.venv.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("POLLBRIDGE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def _run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, check=False)  # noqa: S603
    if result.returncode:
        raise SystemExit(result.returncode)


def _stamp(extra: str) -> tuple[Path, str]:
    value = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + extra.encode() + sys.version.encode()
    ).hexdigest()
    return VENV / f".pollbridge-installed-{extra or 'base'}", value


def _installed(extra: str) -> bool:
    path, value = _stamp(extra)
    return PY.exists() and path.exists() and path.read_text() == value


def _ensure_venv(extra: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        raise SystemExit(f"pollbridge needs Python >= 3.11; this is {sys.version.split()[0]}")
    # the test install is a superset of the base one
    if _installed(extra) or (not extra and _installed("test")):
        return
    if not PY.exists():
        print(f"creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    _run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    target = f".[{extra}]" if extra else "."
    _run(PY, "-m", "pip", "install", "--quiet", "-e", target)
    path, value = _stamp(extra)
    path.write_text(value)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("demo", "test"):
        raise SystemExit(__doc__)
    if argv[0] == "demo":
        _ensure_venv("")
        _run(BIN / "pollbridge", "demo", *(argv[1:] or ["--duration", "30s"]))
    else:
        _ensure_venv("test")
        _run(BIN / "ruff", "check", "bridge", "tests", "benchmarks", "dev.py")
        _run(BIN / "ruff", "format", "--check", "bridge", "tests", "benchmarks", "dev.py")
        _run(BIN / "mypy", "bridge")
        _run(PY, "-m", "pytest", *argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
