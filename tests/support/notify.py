"""A stand-in for systemd's notify socket: records every datagram a daemon sends."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class NotifySocket:
    """A unix datagram socket; ``messages`` are the notifications, each a dict of KEY=value."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []
        self.arrived = threading.Condition()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self.arrived:
                self.messages.append(fields)
                self.arrived.notify_all()

    def wait_for(
        self, predicate: Callable[[dict[str, str]], bool], timeout_s: float = 15, *, after: int = 0
    ) -> int:
        """Index of the first message from ``after`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while True:
                for i in range(after, len(self.messages)):
                    if predicate(self.messages[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout_s}s; notifications: {self.messages}"
                    )
                self.arrived.wait(left)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


@contextmanager
def notify_socket() -> Iterator[NotifySocket]:
    """A NotifySocket in a short temporary directory (unix socket paths are limited to 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="pb-notify-"))
    ns = NotifySocket(folder / "notify")
    try:
        yield ns
    finally:
        ns.close()
        shutil.rmtree(folder, ignore_errors=True)
