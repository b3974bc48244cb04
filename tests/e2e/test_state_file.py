"""A state file deleted or replaced under a running daemon stops it, loudly, instead of the
daemon recording polls and deliveries where nobody can see them."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from bridge.core.signing import generate_secret
from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess
from tests.support.servers import ItemsAPI, Reply, serve

pytestmark = pytest.mark.e2e


def _config(tmp_path: Path, api: str, hook: str) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("orders", api),
        listener("hooks", hook, secret=generate_secret()),
        shutdown_grace=None,
    )


def _wait_exit(daemon: DaemonProcess, timeout_s: float = 15) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = daemon.proc.poll()
        if code is not None:
            return code
        time.sleep(0.05)
    return None


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_lost_state_file_stops_the_daemon_with_exit_74(tmp_path, how):
    """Deleting the state (or moving another file over it) is noticed within seconds: the log
    says what happened, /healthz would be 503, and the daemon stops with exit 74."""
    api = ItemsAPI()
    api.set({"id": 1, "v": 1})
    with serve(api) as api_server, serve(lambda _r: Reply(204)) as receiver:
        daemon = DaemonProcess(_config(tmp_path, api_server.url("/o"), receiver.url("/h")))
        try:
            api_server.wait_count(2)  # the baseline is recorded
            api.set({"id": 1, "v": 2})
            receiver.wait_count(1)
            state = tmp_path / "state.db"
            if how == "deleted":
                for suffix in ("", "-wal", "-shm"):
                    with_suffix = Path(f"{state}{suffix}")
                    if with_suffix.exists():
                        with_suffix.unlink()
            else:
                shutil.copy(state, tmp_path / "other.db")
                os.replace(tmp_path / "other.db", state)
            code = _wait_exit(daemon)
        finally:
            if daemon.proc.poll() is None:
                daemon.kill()
            else:
                daemon.terminate()
        log = daemon.log_path.read_text()
    assert code == 74, log
    assert f"the state file was {how}" in log
    assert "stopping now" in log
