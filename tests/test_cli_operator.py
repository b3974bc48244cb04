"""The CLI's rough edges, as a new user meets them: pipes, unknown names, `run --once`, the
configuration a verb falls back to, and the verb table the README promises."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.cli.app import build_parser
from bridge.store.postgres import PostgresStore
from bridge.store.sqlite import SQLiteStore
from tests.support.configs import listener, source, write_config
from tests.support.daemon import env_for, pollbridge_cmd, run_cli
from tests.support.servers import Reply, serve

ROOT = Path(__file__).resolve().parents[1]


def _config(
    tmp_path: Path, url: str = "http://127.0.0.1:9/o", hook: str = "http://127.0.0.1:9/h"
) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("orders", url, every="30s"),
        listener("hooks", hook, retry=["100ms"]),
        shutdown_grace=None,
    )


def _empty_state(path: Path) -> None:
    store = SQLiteStore(path)
    store.open_sync()
    store.close_sync()


@pytest.mark.parametrize("verb", ["status", "leases", "events"])
def test_a_closed_stdout_ends_quietly_with_the_sigpipe_status(tmp_path, verb):
    """`pollbridge status | head -1`: a reader gone away is exit 141 and no error text."""
    _empty_state(tmp_path / "state.db")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(
            pollbridge_cmd(verb, "--state-file", str(tmp_path / "state.db"), "--json"),
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env_for(),
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "BrokenPipe" not in proc.stderr and "unexpected error" not in proc.stderr
    assert "Exception ignored" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["accept", "nosuch"], "no source named 'nosuch' (known: orders)"),
        (["poll", "nosuch"], "no source named 'nosuch' (known: orders)"),
        (["events", "--source", "nosuch"], "no source named 'nosuch' (known: orders)"),
        (["resume", "nosuch"], "no listener named 'nosuch' (known: hooks)"),
        (["replay", "--dead", "--listener", "nosuch"], "no listener named 'nosuch' (known: hooks)"),
        (["deliveries", "--listener", "nosuch"], "no listener named 'nosuch' (known: hooks)"),
    ],
)
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no-state"])
def test_an_unknown_name_is_exit_1_naming_the_known_ones(
    tmp_path, capsys, argv, message, with_state
):
    """One rule for every verb: a source or listener nobody knows is exit 1, listing the known."""
    config = _config(tmp_path)
    if with_state:
        _empty_state(tmp_path / "state.db")
    assert main([*argv, "--config", str(config)]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["accept", "orders"], "orders: not held; nothing to accept"),
        (["events", "--source", "orders"], "no events match"),
        (["resume", "hooks"], "hooks: was not paused"),
        (["replay", "--dead", "--listener", "hooks"], "nothing to replay"),
        (["deliveries", "--listener", "hooks"], "no deliveries match"),
    ],
)
def test_a_known_name_matching_nothing_is_exit_0(tmp_path, capsys, argv, says):
    """A filter on a configured name that matches nothing is no error."""
    config = _config(tmp_path)
    _empty_state(tmp_path / "state.db")
    assert main([*argv, "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert says in out.out + out.err


def test_accept_takes_json_and_a_state_file(tmp_path, capsys):
    """`accept --json --state-file` works without a configuration, like the inspection verbs."""
    state = tmp_path / "state.db"

    async def hold() -> None:
        store = SQLiteStore(state)
        await store.open()
        try:
            await store.update_source_state("orders", held_reason="would delete 9 of 10 items")
        finally:
            await store.close()

    asyncio.run(hold())
    assert main(["accept", "orders", "--json", "--state-file", str(state)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "source": "orders",
        "held_reason": "would delete 9 of 10 items",
        "accepted": True,
    }
    assert main(["accept", "nosuch", "--json", "--state-file", str(state)]) == 1
    assert "no source named 'nosuch' (known: orders)" in capsys.readouterr().err


@pytest.mark.e2e
def test_run_once_prints_a_summary_and_status_shows_the_run(tmp_path, items_api, receiver):
    """`run --once` says what it did in one line and leaves a record `status` shows."""
    api, server = items_api
    api.set({"id": 1})
    config = _config(tmp_path, server.url("/o"), receiver.url("/h"))
    first = run_cli("run", "--once", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        "run --once: 1 poll(s), 0 change(s), 0 delivered, 0 pending, 0 failed"
    )
    api.set({"id": 1}, {"id": 2})
    second = run_cli("run", "--once", "--config", str(config))
    assert second.returncode == 0, second.stderr
    assert "1 poll(s), 1 change(s), 1 delivered, 0 pending, 0 failed" in second.stdout
    status = run_cli("status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    assert "no record" not in status.stdout
    assert "daemon:  not running (last `run --once` " in status.stdout
    assert "1 change(s), 1 delivered" in status.stdout
    doc = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    assert doc["daemon"]["mode"] == "once" and doc["daemon"]["running"] is False
    assert doc["daemon"]["last_run"]["delivered"] == 1
    assert doc["sources"][0]["configured"] is True


@pytest.mark.skipif(
    Path("/etc/pollbridge/pollbridge.toml").exists(), reason="a system configuration exists"
)
def test_init_then_check_without_config_uses_the_local_file(tmp_path):
    """`init` writes ./pollbridge.toml; `check` and `status` then find it, saying so."""
    written = run_cli("init", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert "then run: pollbridge check\n" in written.stdout
    local = tmp_path / "pollbridge.toml"
    check = run_cli("check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert f"using {local} (/etc/pollbridge/pollbridge.toml does not exist)" in check.stderr
    assert f"config: {local}" in check.stdout
    status = run_cli("status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"no state yet at {tmp_path / 'pollbridge.db'}" in status.stderr
    # an explicit choice is never second-guessed
    missing = run_cli("check", "--config", str(tmp_path / "other.toml"), cwd=tmp_path)
    assert missing.returncode == 78 and "other.toml" in missing.stderr


@pytest.mark.postgres
async def test_leases_on_a_postgres_state_with_no_instance(tmp_path, pg_url):
    """An empty PostgreSQL state says no instance runs, not that SQLite has a single one."""
    store = PostgresStore(pg_url)
    await store.open()
    await store.close()
    config = tmp_path / "pollbridge.toml"
    config.write_text(f'[bridge]\nstate = "{pg_url}"\n')
    res = run_cli("leases", "--config", str(config))
    assert res.returncode == 0, res.stderr
    assert "no instance is running on this state" in res.stdout
    assert "SQLite" not in res.stdout


def _readme_verbs() -> set[str]:
    text = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\| `pollbridge ([a-z][a-z-]*)", text, flags=re.MULTILINE))


def test_the_readme_verb_table_lists_every_verb():
    """The README's command table and the parser have the same verbs."""
    assert _readme_verbs() == set(build_parser().verbs)


def test_status_calls_a_304_poll_unchanged_like_healthz(tmp_path):
    """A poll answered 304 Not Modified reads `unchanged` in `status`, as in /healthz."""

    def api(req):
        if req.headers.get("if-none-match") == '"v1"':
            return Reply(304)
        return Reply(200, {"data": [{"id": 1}]}, {"etag": '"v1"'})

    with serve(api) as server:
        config = _config(tmp_path, server.url("/o"))
        for _ in range(2):
            assert run_cli("poll", "orders", "--commit", "--config", str(config)).returncode == 0
        assert server.requests[-1].headers.get("if-none-match") == '"v1"'
    doc = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    assert doc["sources"][0]["last_result"] == "unchanged"


def test_resume_takes_json(tmp_path, capsys):
    """`resume --json` answers in JSON like the inspection verbs, paused or not."""
    config = _config(tmp_path)
    _empty_state(tmp_path / "state.db")
    assert main(["resume", "hooks", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "listener": "hooks",
        "resumed": False,
        "paused_reason": None,
        "pending": 0,
    }
