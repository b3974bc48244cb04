"""The ``pollbridge`` command as a user runs it: check, poll, secret, errors and exit codes."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge import __version__
from bridge.cli.inspection import status_text
from bridge.core.signing import decode_secret, generate_secret
from bridge.daemon import claim_sqlite_state
from bridge.models import SourceState
from bridge.state_view import status_doc
from tests.support.configs import listener, source, write_config
from tests.support.daemon import run_cli
from tests.support.state import StateView

ROOT = Path(__file__).resolve().parents[1]


def _source_config(tmp_path: Path, url: str, extra: str = "", **hook_fields: Any) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source("orders", url, every="30s", raw=extra),
        listener("hooks", "http://127.0.0.1:9/h", **hook_fields),
        shutdown_grace=None,
    )


def _committed_baseline(tmp_path: Path, items_api: Any, **hook_fields: Any) -> Path:
    """:func:`_source_config` with a committed baseline of item 1; the API then adds item 2."""
    api, server = items_api
    api.set({"id": 1})
    config = _source_config(tmp_path, server.url("/orders"), **hook_fields)
    assert run_cli("poll", "orders", "--commit", "--config", str(config)).returncode == 0
    api.set({"id": 1}, {"id": 2})
    return config


def test_version():
    """``--version`` prints the package version."""
    res = run_cli("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"pollbridge {__version__}"


def test_check_example_config():
    """The shipped example config validates, with its secret redacted (it has no default
    secret or token: they come from the environment)."""
    env = {"ORDERS_TOKEN": "tok-example-1234", "SHIPPING_SECRET": generate_secret()}
    res = run_cli("check", "--config", str(ROOT / "config" / "example.toml"), env=env)
    assert res.returncode == 0, res.stderr
    assert "configuration OK" in res.stdout
    assert "whsec_" not in res.stdout


def test_check_bad_config_exits_78_naming_file_entry_field(tmp_path):
    """A bad config exits 78 with one paragraph naming the file, the source and the field."""
    path = tmp_path / "bad.toml"
    path.write_text('[[sources]]\nname = "orders"\nurl = "https://x/"\nevery = "soon"\n')
    res = run_cli("check", "--config", str(path))
    assert res.returncode == 78
    assert str(path) in res.stderr
    assert 'sources "orders"' in res.stderr
    assert "field every" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_config_file_is_a_config_error(tmp_path):
    """A missing config file is exit 78 and says how to give one."""
    res = run_cli("check", "--config", str(tmp_path / "nope.toml"))
    assert res.returncode == 78
    assert "not found" in res.stderr and "--config" in res.stderr


def test_secret_prints_a_valid_secret():
    """``pollbridge secret`` prints a whsec_ secret of 32 bytes."""
    res = run_cli("secret")
    assert res.returncode == 0
    assert len(decode_secret(res.stdout.strip())) == 32


def test_poll_dry_run_then_commit_then_changes(tmp_path, items_api):
    """``poll`` shows the baseline, records only with --commit, then prints each change as JSON."""
    api, server = items_api
    api.set({"id": 1, "s": "a"}, {"id": 2, "s": "a"})
    config = _source_config(tmp_path, server.url("/orders"))
    dry = run_cli("poll", "orders", "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == ""
    assert "would record 2 item(s)" in dry.stderr
    assert not (tmp_path / "state.db").exists()  # a dry run creates no state file
    first = run_cli("poll", "orders", "--commit", "--config", str(config))
    assert first.returncode == 0, first.stderr
    api.set({"id": 1, "s": "b"}, {"id": 3, "s": "a"})
    res = run_cli("poll", "orders", "--config", str(config))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(x["type"], x["key"]) for x in lines] == [
        ("item.updated", "1"),
        ("item.created", "3"),
        ("item.deleted", "2"),
    ]
    assert lines[0]["changes"] == [{"op": "replace", "path": "/s", "value": "b"}]
    assert lines[0]["before"] == {"id": 1, "s": "a"}
    assert lines[2]["after"] is None
    assert StateView(tmp_path / "state.db").events() == []


def test_poll_dry_run_leaves_an_existing_state_untouched(tmp_path, items_api):
    """A dry run reads the state read-only: the file is not written to."""
    config = _committed_baseline(tmp_path, items_api)
    state = tmp_path / "state.db"
    before = (state.read_bytes(), state.stat().st_mtime_ns)
    dry = run_cli("poll", "orders", "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert [json.loads(line)["key"] for line in dry.stdout.splitlines()] == ["2"]
    assert (state.read_bytes(), state.stat().st_mtime_ns) == before
    wal = tmp_path / "state.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_poll_commit_queues_deliveries(tmp_path, items_api):
    """``poll --commit`` records events and one pending delivery per matching listener."""
    config = _committed_baseline(tmp_path, items_api)
    res = run_cli("poll", "orders", "--commit", "--config", str(config))
    assert res.returncode == 0, res.stderr
    assert "1 event(s) recorded, 1 delivery(ies) queued\n" in res.stderr
    view = StateView(tmp_path / "state.db")
    assert [(r.event.type, r.event.key) for r in view.events()] == [("created", "2")]
    assert [(d.listener, d.state) for d in view.deliveries()] == [("hooks", "pending")]


def test_poll_failure_is_one_paragraph_and_records_nothing(tmp_path, items_api):
    """A 200 whose items path matches nothing fails the poll, names the cause, records nothing."""
    api, server = items_api
    api.set({"id": 1})
    config = _source_config(tmp_path, server.url("/orders"))
    assert run_cli("poll", "orders", "--commit", "--config", str(config)).returncode == 0
    api.wrap = "error"
    res = run_cli("poll", "orders", "--commit", "--config", str(config))
    assert res.returncode == 1
    assert "matched nothing" in res.stderr and "orders" in res.stderr
    assert "Traceback" not in res.stderr
    view = StateView(tmp_path / "state.db")
    assert len(view.items("orders")) == 1
    assert view.events() == []


def test_poll_unknown_source(tmp_path):
    """Polling a source that is not configured is exit 1 (not a bad configuration), naming the
    known ones."""
    config = _source_config(tmp_path, "http://127.0.0.1:9/")
    res = run_cli("poll", "nope", "--config", str(config))
    assert res.returncode == 1
    assert "no source named 'nope'" in res.stderr and "orders" in res.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["demo", "--duration", "soon"], "--duration: invalid duration 'soon'"),
        (["events", "--since", "yesterday"], "--since 'yesterday': expected a duration"),
        (["events", "--type", "changed"], "--type 'changed': expected one of"),
        (["events", "--limit", "0"], "--limit: expected 1 or more, got 0"),
        (["secret", "--bytes", "10"], "--bytes: expected from 24 to 64, got 10"),
        (["listen", "--status", "999"], "--status: expected from 200 to 599, got 999"),
        (["deliveries", "--state", "lost"], "invalid choice: 'lost'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_a_wrong_command_line_exits_64_naming_the_option(args, expected):
    """Every wrong command line (argparse's or pollbridge's own checks) is exit 64, no traceback."""
    res = run_cli(*args)
    assert res.returncode == 64, res.stderr
    assert expected in res.stderr
    assert "Traceback" not in res.stderr and "unexpected error" not in res.stderr


def test_status_text_says_when_a_backing_off_source_polls_next():
    """A source in backoff reads 'backoff (next poll in 2m): <error>', not 'until in 2m'."""
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    source = SourceState(
        "orders",
        last_poll_at=now - timedelta(seconds=5),
        last_result="error",
        last_error="HTTP 503",
        consecutive_failures=3,
        not_before=now + timedelta(minutes=2),
    )
    text = status_text(status_doc("/s.db", None, [source], [], now), now)
    assert "backoff (next poll in 2m): HTTP 503" in text
    assert "until in" not in text


def test_status_text_without_a_daemon_run_explains_the_empty_listener_table():
    """Before the daemon ever ran, an empty table says why instead of 'no listeners yet'."""
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    text = status_text(status_doc("/s.db", None, [], [], now), now)
    assert "no listeners yet (the daemon has not run on this state" in text
    ran = status_text(status_doc("/s.db", {"sources": {}, "listeners": {}}, [], [], now), now)
    assert "no listeners yet" in ran and "has not run" not in ran


def test_an_unreadable_state_gets_a_permission_hint(tmp_path, monkeypatch):
    """SQLite's bare 'unable to open database file' is followed by who may not read what."""
    from bridge.cli import app as cli
    from bridge.errors import StoreError

    state = tmp_path / "state.db"
    state.write_bytes(b"")
    error = StoreError("open", "unable to open database file", location=str(state))
    assert cli._access_hint(error) == ""  # readable: nothing to add
    monkeypatch.setattr(cli.os, "access", lambda path, mode: Path(path) != state)
    assert f"this user may not read {state}" in cli._access_hint(error)
    assert "sudo" in cli._access_hint(error)
    pg = StoreError("open", "refused", location="postgresql://u@h/db")
    assert cli._access_hint(pg) == ""


def test_replay_without_a_running_daemon_says_who_will_send(tmp_path, items_api):
    """Replaying with no daemon running does not promise a send 'within a few seconds'."""
    config = _committed_baseline(tmp_path, items_api)
    assert run_cli("poll", "orders", "--commit", "--config", str(config)).returncode == 0
    (event,) = json.loads(run_cli("events", "--json", "--config", str(config)).stdout)
    res = run_cli("replay", event["id"], "--config", str(config))
    assert res.returncode == 0, res.stderr
    assert "queued 1 delivery(ies) again" in res.stdout
    assert "no daemon is running on this state: `pollbridge run` sends them" in res.stdout


def test_poll_commit_says_when_no_listener_takes_the_events(tmp_path, items_api):
    """Events no listener takes are reported as recorded, not as 'queued for delivery'."""
    config = _committed_baseline(tmp_path, items_api, events=["deleted"])
    res = run_cli("poll", "orders", "--commit", "--config", str(config))
    assert res.returncode == 0, res.stderr
    assert "1 event(s) recorded, 0 delivery(ies) queued (no listener takes them)" in res.stderr


def test_poll_after_a_change_of_items_explains_the_rebaseline(tmp_path, items_api):
    """A re-baseline is not reported as 'no snapshot yet' under the baseline setting."""
    api, server = items_api
    api.set({"id": 1})
    config = _source_config(tmp_path, server.url("/orders"), 'rebaseline = "emit"')
    assert run_cli("poll", "orders", "--commit", "--config", str(config)).returncode == 0
    _source_config(tmp_path, server.url("/orders"), 'rebaseline = "emit"\nignore = ["$.x"]')
    res = run_cli("poll", "orders", "--config", str(config))
    assert res.returncode == 0, res.stderr
    assert "orders: what defines its items changed" in res.stderr
    assert "the rebaseline would record 1 item(s) with a created event each" in res.stderr
    assert "no snapshot yet" not in res.stderr


def test_leases_takes_state_file_like_the_other_inspection_verbs(tmp_path):
    """`leases --state-file` works as for status/events, without a configuration."""
    res = run_cli("leases", "--state-file", str(tmp_path / "none.db"))
    assert res.returncode == 0, res.stderr
    assert f"no state yet at {tmp_path / 'none.db'}" in res.stderr


def test_migrate_state_refuses_a_state_a_daemon_is_running_on(tmp_path):
    """Copying a state while a daemon still commits to it would lose those commits: refused."""
    state = tmp_path / "state.db"
    state.write_bytes(b"")
    lock = claim_sqlite_state(str(state))  # stands in for the running daemon
    try:
        res = run_cli(
            "migrate-state", "--from", str(state), "--to", "postgresql://u@127.0.0.1:1/db"
        )
    finally:
        assert lock is not None
        os.close(lock)
    assert res.returncode == 74
    assert f"another pollbridge daemon (pid {os.getpid()}) is using this state" in res.stderr
