"""The daemon as systemd runs it: notify messages, the watchdog, SIGHUP reloads."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess, eventually, run_cli
from tests.support.notify import notify_socket
from tests.support.servers import ItemsAPI, Reply, serve

pytestmark = pytest.mark.e2e


def _source(name: str, url: str, baseline: str = "silent") -> str:
    return source(name, url, baseline=baseline)


def _main(tmp_path: Path, body: str) -> Path:
    return write_config(tmp_path / "pollbridge.toml", body)


def _listener(url: str) -> str:
    # a long, fast retry schedule: deliveries keep waiting while the receiver refuses them
    return listener("hooks", url, retry=["200ms"] * 200)


def test_notify_ready_watchdog_reload_and_stopping(tmp_path, items_api, receiver):
    """READY=1 with a STATUS once polling runs, WATCHDOG=1 every half WATCHDOG_USEC,
    RELOADING=1 + MONOTONIC_USEC then READY=1 on SIGHUP, STOPPING=1 on SIGTERM."""
    api, api_server = items_api
    api.set({"id": 1})
    config = _main(
        tmp_path, _source("orders", api_server.url("/orders")) + _listener(receiver.url("/h"))
    )
    with notify_socket() as ns:
        env = {"NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": "400000"}
        with DaemonProcess(config, env=env) as daemon:
            ready = ns.wait_for(lambda m: m.get("READY") == "1")
            assert "1 source(s), 1 listener(s)" in ns.messages[ready]["STATUS"]
            first = ns.wait_for(lambda m: m.get("WATCHDOG") == "1", after=ready)
            ns.wait_for(lambda m: m.get("WATCHDOG") == "1", after=first + 1)
            daemon.signal(signal.SIGHUP)
            reloading = ns.wait_for(lambda m: m.get("RELOADING") == "1", after=ready + 1)
            assert re.fullmatch(r"\d+", ns.messages[reloading]["MONOTONIC_USEC"])
            ns.wait_for(lambda m: m.get("READY") == "1", after=reloading)
            daemon.wait_output("configuration reloaded")
            daemon.signal(signal.SIGTERM)
            ns.wait_for(lambda m: m.get("STOPPING") == "1", after=reloading)
            assert daemon.proc.wait(20) == 0, daemon.output()


def test_reload_adds_and_removes_sources_without_losing_queued_deliveries(tmp_path, items_api):
    """A SIGHUP that removes one source and adds another (in conf.d) keeps every delivery queued
    before it, polls the new source, and stops polling the removed one."""
    orders_api, orders_server = items_api
    orders_api.set({"id": 1})
    users_api, products_api = ItemsAPI(), ItemsAPI()
    users_api.set({"id": "u1"}, {"id": "u2"})
    products_api.set({"id": "p1"})
    with (
        serve(users_api) as users_server,
        serve(products_api) as products_server,
        serve(lambda _r: Reply(503)) as hooks,
    ):
        listener = _listener(hooks.url("/hooks"))
        config = _main(
            tmp_path,
            _source("orders", orders_server.url("/o"))
            + _source("users", users_server.url("/u"), baseline="emit")
            + listener,
        )
        c = ("--config", str(config))
        with DaemonProcess(config) as daemon:
            orders_server.wait_count(1)
            orders_api.set({"id": 1}, {"id": 2})
            # the receiver refuses: all three deliveries are queued and retried
            hooks.wait_for(lambda rs: {r.json()["key"] for r in rs} >= {"u1", "u2", "2"})

            (tmp_path / "conf.d").mkdir()
            (tmp_path / "conf.d" / "products.toml").write_text(
                _source("products", products_server.url("/p"), baseline="emit")
            )
            _main(tmp_path, _source("orders", orders_server.url("/o")) + listener)  # users go
            daemon.signal(signal.SIGHUP)
            daemon.wait_output(r"configuration reloaded: sources \+1 -1 ~0 \(\+products, -users\)")
            products_server.wait_count(1)
            users_polls = len(users_server.requests)

            hooks.handler = lambda _r: Reply(204)
            orders_api.set({"id": 1}, {"id": 2}, {"id": 3})

            def all_delivered() -> list | None:
                events = json.loads(run_cli("events", "--json", *c).stdout)
                done = events and all(e["deliveries"] == {"hooks": "delivered"} for e in events)
                return events if done and len(events) == 5 else None

            events = eventually(all_delivered, what="5 delivered events", context=daemon.output)
            assert sorted((e["source"], e["key"]) for e in events) == [
                ("orders", "2"),
                ("orders", "3"),
                ("products", "p1"),
                ("users", "u1"),
                ("users", "u2"),
            ]
            # at most a poll already under way when the signal came
            assert len(users_server.requests) <= users_polls + 1
            status = json.loads(run_cli("status", "--json", *c).stdout)
            configured = {s["name"]: s["configured"] for s in status["sources"]}
            assert configured == {"orders": True, "products": True, "users": False}
            assert daemon.terminate() == 0, daemon.output()


def test_an_invalid_reload_keeps_the_old_configuration(tmp_path, items_api, receiver):
    """A reload with a bad file or a duplicate conf.d name is rejected with the reason in the
    log and in STATUS=, and the daemon goes on with the configuration it had."""
    api, api_server = items_api
    api.set({"id": 1})
    good = _source("orders", api_server.url("/orders")) + _listener(receiver.url("/hooks"))
    config = _main(tmp_path, good)
    with (
        notify_socket() as ns,
        DaemonProcess(config, env={"NOTIFY_SOCKET": str(ns.path)}) as daemon,
    ):
        ns.wait_for(lambda m: m.get("READY") == "1")
        api_server.wait_count(1)

        config.write_text(config.read_text() + '\n[[listeners]]\nname = "x"\nurl = "ftp://nope"\n')
        daemon.signal(signal.SIGHUP)
        daemon.wait_output("reload rejected; still running the previous configuration")
        assert "url: expected an http:// or https:// URL" in daemon.output()
        failed = ns.wait_for(lambda m: "reload failed" in m.get("STATUS", ""))
        assert ns.messages[failed]["READY"] == "1"
        status = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
        eventually(
            lambda: (
                (
                    json.loads(run_cli("status", "--json", "--config", str(config)).stdout)[
                        "daemon"
                    ]["last_reload"]
                    or {}
                ).get("ok")
                is False
            ),
            what="the failed reload in the runtime status",
        )
        assert status["daemon"]["running"] is True

        # the old configuration still polls and delivers
        api.set({"id": 1}, {"id": 2})
        assert receiver.wait_count(1)[0].json()["key"] == "2"

        config.write_text(_main(tmp_path, good).read_text())
        (tmp_path / "conf.d").mkdir()
        (tmp_path / "conf.d" / "dup.toml").write_text(_source("orders", api_server.url("/x")))
        daemon.signal(signal.SIGHUP)
        daemon.wait_output("reload rejected", count=2)
        assert re.search(
            r'duplicate source name "orders": defined in \S+pollbridge.toml and in \S+dup.toml',
            daemon.output(),
        )

        (tmp_path / "conf.d" / "dup.toml").unlink()
        daemon.signal(signal.SIGHUP)
        daemon.wait_output(r"configuration reloaded: sources \+0 -0 ~0")
        api.set({"id": 1}, {"id": 2}, {"id": 3})
        assert receiver.wait_count(2)[1].json()["key"] == "3"
        assert daemon.terminate() == 0, daemon.output()
