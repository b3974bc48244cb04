"""The operator's CLI against the state file of a real daemon run, while it runs and after."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from bridge.core.signing import decode_secret, generate_secret, signature_header
from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess, env_for, eventually, pollbridge_cmd, run_cli
from tests.support.servers import Reply, serve

pytestmark = pytest.mark.e2e


def _write_config(path: Path, api_url: str, *listeners: str) -> Path:
    return write_config(path, source("orders", api_url), *listeners)


def _state_only(tmp_path: Path, state: Path) -> Path:
    """A configuration of nothing but its state location."""
    return write_config(tmp_path / "pollbridge.toml", state=state, shutdown_grace=None)


def _cli_json(*args: str) -> object:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_status_events_show_deliveries_and_replay_on_a_live_state(tmp_path, items_api, receiver):
    """Every read verb works beside the running daemon; replay --dead re-sends the same event ids
    once the receiver is fixed, and the running daemon notices without a restart."""
    api, api_server = items_api
    api.set({"id": 1, "status": "open"}, {"id": 2, "status": "open"})
    with serve(lambda _r: Reply(500, "the receiver is broken")) as broken:
        config = _write_config(
            tmp_path / "pollbridge.toml",
            api_server.url("/orders"),
            listener("hooks", receiver.url("/hooks"), secret=generate_secret()),
            listener("broken", broken.url("/hooks"), retry=["100ms"]),
        )
        c = ("--config", str(config))
        with DaemonProcess(config) as daemon:
            api_server.wait_count(1)
            api.set({"id": 1, "status": "shipped"}, {"id": 3, "status": "new"})
            receiver.wait_count(3)

            def dead_deliveries() -> list[dict]:
                rows = _cli_json(
                    "deliveries", "--state", "dead", "--listener", "broken", "--json", *c
                )
                return rows if len(rows) == 3 else []

            dead = eventually(dead_deliveries, what="3 dead deliveries", context=daemon.output)
            assert {d["attempts"] for d in dead} == {2}
            assert {d["last_status"] for d in dead} == {500}

            status = _cli_json("status", "--json", *c)
            assert status["daemon"]["running"] is True
            (orders,) = status["sources"]
            assert orders["name"] == "orders" and orders["configured"] is True
            assert orders["item_count"] == 2 and orders["state"] == "ok"
            assert orders["next_poll_at"] is not None
            lst = {row["name"]: row for row in status["listeners"]}
            assert lst["hooks"]["pending"] == 0 and lst["hooks"]["dead"] == 0
            assert lst["broken"]["dead"] == 3
            assert "HTTP 500" in lst["broken"]["last_error"]

            text = run_cli("status", *c)
            assert text.returncode == 0, text.stderr
            assert "daemon:  running" in text.stdout
            assert "orders" in text.stdout and "broken" in text.stdout

            events = _cli_json("events", "--json", *c)
            assert sorted(e["type"] for e in events) == [
                "item.created",
                "item.deleted",
                "item.updated",
            ]
            assert all(e["deliveries"] == {"hooks": "delivered", "broken": "dead"} for e in events)
            updated = _cli_json("events", "--type", "updated", "--json", *c)
            assert [e["key"] for e in updated] == ["1"]
            assert _cli_json("events", "--key", "3", "--since", "1h", "--json", *c)[0]["key"] == "3"
            # an unknown name is exit 1 naming the known ones; a known one matching nothing is 0
            unknown_source = run_cli("events", "--source", "nope", "--json", *c)
            assert unknown_source.returncode == 1
            assert "no source named 'nope' (known: orders)" in unknown_source.stderr
            assert _cli_json("events", "--source", "orders", "--key", "999", "--json", *c) == []

            event_id = updated[0]["id"]
            shown = run_cli("show", event_id, *c)
            assert shown.returncode == 0, shown.stderr
            assert "delivery to broken: dead, 2 attempt(s)" in shown.stdout
            assert "the receiver is broken" in shown.stdout
            assert '"op":"replace","path":"/status"' in shown.stdout
            detail = _cli_json("show", event_id, "--json", *c)
            by_listener = {d["listener"]: d for d in detail["deliveries"]}
            history = {
                n: [a["status"] for a in d["attempt_history"]] for n, d in by_listener.items()
            }
            assert history == {"broken": [500, 500], "hooks": [204]}
            # "attempts" is the count, as in `deliveries --json`
            assert by_listener["broken"]["attempts"] == 2 and by_listener["hooks"]["attempts"] == 1

            broken.handler = lambda _r: Reply(204)
            before = len(broken.requests)
            replayed = run_cli("replay", "--dead", "--listener", "broken", *c)
            assert replayed.returncode == 0, replayed.stderr
            assert "queued 3 delivery(ies) again" in replayed.stdout
            assert "a running daemon sends them" in replayed.stdout
            resent = broken.wait_count(before + 3)[before:]
            assert sorted(r.headers["webhook-id"] for r in resent) == sorted(
                e["id"] for e in events
            )
            eventually(
                lambda: _cli_json("deliveries", "--state", "dead", "--json", *c) == [],
                what="no dead deliveries left",
            )
            assert daemon.terminate() == 0, daemon.output()

    stopped = run_cli("status", *c)
    assert "daemon:  not running (stopped" in stopped.stdout
    unknown = run_cli("show", "evt_nope", *c)
    assert unknown.returncode == 1 and "no event 'evt_nope'" in unknown.stderr


def test_resume_brings_back_a_listener_paused_by_410(tmp_path, items_api):
    """A 410 pauses the listener; ``resume`` (beside the running daemon) sends what waited."""
    api, api_server = items_api
    api.set({"id": 1})
    with serve(lambda _r: Reply(410)) as gone:
        config = _write_config(
            tmp_path / "pollbridge.toml",
            api_server.url("/orders"),
            listener("gone", gone.url("/hooks")),
        )
        c = ("--config", str(config))
        with DaemonProcess(config) as daemon:
            api_server.wait_count(1)
            api.set({"id": 1}, {"id": 2})
            gone.wait_count(1)
            daemon.wait_output("answered 410 Gone: paused")
            api.set({"id": 1}, {"id": 2}, {"id": 3})
            status = eventually(
                lambda: (
                    (s := _cli_json("status", "--json", *c))["listeners"][0]["pending"] == 2 and s
                ),
                what="two pending deliveries",
            )
            (row,) = status["listeners"]
            assert row["state"] == "paused" and "410" in row["paused_reason"]
            waiting = run_cli("deliveries", "--state", "pending", *c).stdout.splitlines()[1:]
            assert len(waiting) == 2 and all("listener paused" in line for line in waiting)
            assert len(gone.requests) == 1
            gone.handler = lambda _r: Reply(204)
            resumed = run_cli("resume", "gone", *c)
            assert resumed.returncode == 0, resumed.stderr
            assert "gone: resumed (was paused: the listener answered 410 Gone)" in resumed.stdout
            keys = [r.json()["key"] for r in gone.wait_count(3)[1:]]
            assert sorted(keys) == ["2", "3"]
            again = run_cli("resume", "gone", *c)
            assert "gone: was not paused" in again.stdout
            unknown = run_cli("resume", "nobody", *c)
            assert unknown.returncode == 1 and "no listener named 'nobody'" in unknown.stderr
            second = run_cli("run", "--once", *c)  # a second daemon on one SQLite state
            assert second.returncode == 74, second.stderr
            assert f"another pollbridge daemon (pid {daemon.proc.pid}) is using" in second.stderr
            assert daemon.terminate() == 0, daemon.output()
        # a 410 is said once, as a pause: not also as a failed attempt with a next try
        assert daemon.output().count("answered 410 Gone: paused") == 1
        assert "failed (attempt" not in daemon.output()
        # the control counter moving (our own 410 pause, then the resume) is debug only: the
        # pause has its own warning, and it was no operator
        assert "operator" not in daemon.output() and "control counter" not in daemon.output()


def test_read_verbs_without_state_say_so_and_create_nothing(tmp_path):
    """With no state file the read verbs exit 0 with a friendly note and create no file."""
    config = _state_only(tmp_path, tmp_path / "none" / "state.db")
    for verb in (["status"], ["events"], ["deliveries"], ["show", "evt_x"]):
        result = run_cli(*verb, "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert "no state yet" in result.stderr
    assert json.loads(run_cli("events", "--json", "--config", str(config)).stdout) == []
    assert not (tmp_path / "none").exists()
    replay = run_cli("replay", "evt_x", "--config", str(config))
    assert replay.returncode == 1 and "nothing to replay" in replay.stderr
    assert not (tmp_path / "none").exists()


def test_read_verbs_work_without_the_sources_credentials(tmp_path):
    """An operator's shell lacks the unit's credentials: status still finds the state."""
    needs_token = source(
        "s",
        "https://api.example.com/x",
        every="1m",
        items=None,
        headers={"Authorization": "Bearer ${API_TOKEN}"},
    )
    config = write_config(tmp_path / "pollbridge.toml", needs_token, shutdown_grace=None)
    assert run_cli("check", "--config", str(config)).returncode == 78
    result = run_cli("status", "--config", str(config))
    assert result.returncode == 0 and "no state yet" in result.stderr


def test_read_verbs_never_migrate_an_old_state(tmp_path):
    """A state at an older schema is reported, not upgraded behind the daemon's back."""
    from bridge.store.sqlite import MIGRATIONS

    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[1] + "; PRAGMA user_version = 1;")
    conn.close()
    config = _state_only(tmp_path, path)
    result = run_cli("status", "--config", str(config))
    assert result.returncode == 74
    assert "schema version 1" in result.stderr and "start the daemon once" in result.stderr
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


def test_replay_arguments_are_checked(tmp_path):
    """replay needs event ids or --dead, not both; --since only with --dead."""
    config = _state_only(tmp_path, tmp_path / "state.db")
    for args in ([], ["evt_1", "--dead"], ["evt_1", "--since", "1d"]):
        result = run_cli("replay", *args, "--config", str(config))
        assert result.returncode == 64, result.stderr


def test_init_writes_a_config_that_passes_check(tmp_path):
    """``init`` writes a private, commented starter that ``check`` accepts; no silent overwrite."""
    path = tmp_path / "pollbridge.toml"
    first = run_cli("init", str(path))
    assert first.returncode == 0, first.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert "[[sources]]" in text and "[[listeners]]" in text and 'secret = "whsec_' in text
    check = run_cli("check", "--config", str(path))
    assert check.returncode == 0, check.stderr
    assert "configuration OK" in check.stdout
    again = run_cli("init", str(path))
    assert again.returncode == 1 and "--force" in again.stderr
    assert path.read_text() == text
    forced = run_cli("init", str(path), "--force")
    assert forced.returncode == 0 and path.read_text() != text


def test_listen_prints_each_webhook_and_its_signature_verdict(tmp_path):
    """``listen`` shows each webhook and says whether its signature verifies."""
    secret = generate_secret()
    proc = subprocess.Popen(
        pollbridge_cmd("listen", "--port", "0", "--secret", secret, "--json"),
        env=env_for(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        port = int(banner.split("http://127.0.0.1:")[1].split("/")[0])
        body = b'{"id":"evt_1","type":"item.created","source":"orders","key":"7","data":{}}'
        now = int(time.time())
        good = {
            "webhook-id": "evt_1",
            "webhook-timestamp": str(now),
            "webhook-signature": signature_header([decode_secret(secret)], "evt_1", now, body),
        }
        bad = {**good, "webhook-signature": good["webhook-signature"][:-4] + "AAA="}
        stale = {
            **good,
            "webhook-timestamp": str(now - 3600),
            "webhook-signature": signature_header(
                [decode_secret(secret)], "evt_1", now - 3600, body
            ),
        }
        url = f"http://127.0.0.1:{port}/hooks"
        for headers in (good, bad, stale):
            assert httpx.post(url, content=body, headers=headers).status_code == 204
    finally:
        proc.send_signal(signal.SIGINT)
        out, _err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["signature_ok"] for line in lines] == [True, False, False]
    assert lines[0]["body"]["key"] == "7" and lines[0]["path"] == "/hooks"
    assert "no v1 signature matches" in lines[1]["signature"]
    assert "timestamp" in lines[2]["signature"]
