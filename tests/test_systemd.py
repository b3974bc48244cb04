"""bridge/systemd.py: the notify protocol spoken to a real datagram socket."""

from __future__ import annotations

import os
import socket
import uuid

from bridge.systemd import Notifier
from tests.support.notify import notify_socket


def test_notifications_arrive_as_datagrams_of_key_value_lines():
    """READY, STATUS (one line), WATCHDOG, RELOADING with MONOTONIC_USEC and STOPPING arrive."""
    with notify_socket() as ns:
        notifier = Notifier({"NOTIFY_SOCKET": str(ns.path)})
        assert notifier.enabled
        assert notifier.ready("2 sources,\n 1 listener")
        assert notifier.watchdog()
        assert notifier.reloading()
        assert notifier.stopping()
        ns.wait_for(lambda m: "STOPPING" in m)
        notifier.close()
    ready, watchdog, reloading, stopping = ns.messages
    assert ready == {"READY": "1", "STATUS": "2 sources, 1 listener"}
    assert watchdog == {"WATCHDOG": "1"}
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert stopping == {"STOPPING": "1"}


def test_abstract_socket_names_are_supported():
    """A NOTIFY_SOCKET starting with @ names an abstract socket."""
    name = f"pollbridge-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(b"\0" + name.encode())
        server.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.status("hello")
        notifier.close()
        assert server.recv(100) == b"STATUS=hello"


def test_without_systemd_nothing_is_sent():
    """No NOTIFY_SOCKET (or a gone one): calls do nothing and never raise."""
    assert not Notifier({}).ready()
    assert not Notifier({}).enabled
    gone = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert gone.enabled and not gone.watchdog() and not gone.watchdog()
    gone.close()


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process():
    """Ping every WATCHDOG_USEC/2, unless WATCHDOG_PID names another process."""
    assert Notifier({"WATCHDOG_USEC": "2000000"}).watchdog_interval_s == 1.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval_s == 1.0
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval_s is None
    assert Notifier({}).watchdog_interval_s is None
