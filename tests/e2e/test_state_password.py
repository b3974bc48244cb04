"""A PostgreSQL password in ``[bridge] state`` never appears in what pollbridge prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.configs import source, write_config
from tests.support.daemon import run_cli
from tests.support.servers import Reply, serve

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PASSWORD = "hunter2-state-pw"


def _with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


def test_status_before_the_first_run_redacts_the_password(pg_url):
    """'no state yet at postgresql://postgres:***@…': the password is not shown (trust auth
    accepts any password, so the URL is a working one)."""
    result = run_cli("status", "--state-file", _with_password(pg_url))
    assert result.returncode == 0, result.stderr
    assert "no state yet at postgresql://postgres:***@" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_the_daemons_start_line_redacts_the_password(tmp_path: Path, pg_url):
    """The daemon's own lines name the state without its password, given through ${VAR}."""
    env = {"STATE_URL": _with_password(pg_url)}
    with serve(lambda _r: Reply(200, [])) as api:
        config = write_config(
            tmp_path / "pollbridge.toml",
            source("api", api.url("/items"), every="1h", items=None),
            state="${STATE_URL}",
            shutdown_grace=None,
        )
        result = run_cli("run", "--once", "--debug", "--config", str(config), env=env)
    shown = result.stdout + result.stderr
    assert result.returncode == 0, shown
    assert "postgres:***@" in shown
    assert PASSWORD not in shown
    checked = run_cli("check", "--config", str(config), env=env)
    assert PASSWORD not in checked.stdout + checked.stderr
