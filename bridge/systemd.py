"""systemd's notify protocol: plain datagrams to ``$NOTIFY_SOCKET``, no libsystemd needed.

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing, so the daemon always calls.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("pollbridge.systemd")


def _address(value: str) -> str | bytes | None:
    if value.startswith("/"):
        return value
    if value.startswith("@"):
        # an abstract socket: a leading NUL byte instead of the "@"
        return b"\0" + value[1:].encode()
    return None


class Notifier:
    """Sends ``READY=1``, ``STATUS=``, ``WATCHDOG=1``, ``RELOADING=1`` and ``STOPPING=1``."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval_s = _watchdog_interval_s(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one notification of ``KEY=value`` lines; False when not under systemd or it failed."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            # systemd gone or the socket full: never fatal, but say so once
            if not self._warned:
                log.warning("cannot notify systemd at $NOTIFY_SOCKET: %s", exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *_status(status))

    def status(self, status: str) -> bool:
        return self.send(*_status(status))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        # systemd >= 253 wants the monotonic time with RELOADING=1 (Type=notify-reload)
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *_status(status))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(status: str | None) -> list[str]:
    if status is None:
        return []
    return ["STATUS=" + " ".join(status.split())]


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` (systemd's advice), when the watchdog is meant for us."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2
