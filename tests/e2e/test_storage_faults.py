"""Storage faults against the real daemon: it reports them, loses nothing, and recovers alone.

A local API keeps changing and a receiver records every webhook while the state store fails:

- another process holds the SQLite write lock (``POLLBRIDGE_LOCK_HOLD_S``, default 10 s; the
  long run holds it 30 s, past the 30 s store-health limit);
- PostgreSQL is unreachable: a TCP proxy between the daemon and the server, started and stopped
  by the test, refuses connections and cuts the open ones (``POLLBRIDGE_PG_OUTAGE_S``, default
  8 s);
- the disk holding the SQLite state fills up mid-run, then space frees up (a small tmpfs the
  test mounts: root only, skipped elsewhere);
- the state is on a read-only file system at start: the daemon refuses with a message and exit
  74, the read verbs still work, and once writable the next start delivers what was pending.

Through each fault the daemon keeps running and logs what is wrong; after it, with the API at
rest, the stored snapshot equals the API's and the invariants of :mod:`tests.chaos.harness`
hold: no loss, no phantom, identical duplicates, per-key order.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.chaos.harness import (
    SEED,
    SOURCE,
    ChangingAPI,
    FlakyReceiver,
    check_invariants,
    settle,
)
from tests.support.configs import listener, source, write_config
from tests.support.daemon import DaemonProcess, eventually, run_cli
from tests.support.servers import Reply, TestServer, serve
from tests.support.state import StateView

LOCK_HOLD_S = float(os.environ.get("POLLBRIDGE_LOCK_HOLD_S", "10"))
PG_OUTAGE_S = float(os.environ.get("POLLBRIDGE_PG_OUTAGE_S", "8"))

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150 + 2 * max(LOCK_HOLD_S, PG_OUTAGE_S))]

RETRY = ["100ms", "200ms", "500ms"] + ["1s"] * 100


def _config(tmp_path: Path, state: str, api: TestServer, hooks: TestServer, **bridge: str) -> Path:
    return write_config(
        tmp_path / "pollbridge.toml",
        source(SOURCE, api.url("/things"), every="200ms", baseline="emit"),
        listener("hooks", hooks.url("/hooks"), retry=RETRY, max_in_flight=4, timeout="2s"),
        state=state,
        shutdown_grace="5s",
        **bridge,
    )


def _routes(_event_type: str) -> set[str]:
    return {"hooks"}


def _through_fault(
    tmp_path: Path,
    state: str,
    fault: Callable[[DaemonProcess], contextlib.AbstractContextManager[None]],
    reported: str,
    **bridge: str,
) -> str:
    """Run the daemon, inject ``fault`` while the API changes, and check it recovered and lost
    nothing; ``reported``: a regex the log must match during the fault. Returns the log."""
    rng = random.Random(SEED)
    api = ChangingAPI(random.Random(rng.random()), every_s=0.05)
    receiver = FlakyReceiver(random.Random(rng.random()), fail_share=0.0)
    view = StateView(state)
    with serve(api) as api_server, serve(receiver) as hooks:
        config = _config(tmp_path, state, api_server, hooks, **bridge)
        api.start()
        with DaemonProcess(config) as daemon:
            try:
                eventually(lambda: len(receiver.log) >= 5, 30, "the first deliveries")
                with fault(daemon):
                    daemon.wait_output(reported, timeout_s=60)
                # recovered by itself: new changes are polled, committed and delivered again
                sent = len(receiver.log)
                eventually(
                    lambda: len(receiver.log) > sent + 5,
                    60,
                    f"deliveries after the fault (seed {SEED})",
                    daemon.output,
                )
            finally:
                final = api.freeze()
            logs = settle([daemon], view, final)
    log = logs[0]
    assert "Traceback" not in log, log
    assert "unexpected error" not in log, log
    events, duplicates = check_invariants(
        view, final, receiver.log, _routes, replay_listener="hooks"
    )
    print(f"storage fault: seed {SEED}, {events} events, {duplicates} duplicate deliveries")
    return log


# -- a lock held by another process ---------------------------------------------------------


def test_sqlite_lock_held_by_another_process(tmp_path):
    """Another writer holds the SQLite lock: polls and deliveries wait or fail and say so; once
    it lets go, everything arrives, nothing twice under two ids, nothing lost."""
    state = tmp_path / "state.db"

    @contextlib.contextmanager
    def hold_lock(_daemon: DaemonProcess) -> Iterator[None]:
        # the fault itself is SQLite's: an external connection taking the write lock
        blocker = sqlite3.connect(state, isolation_level=None, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            time.sleep(LOCK_HOLD_S)
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

    log = _through_fault(tmp_path, str(state), hold_lock, r"database is locked")
    assert "another process holds a write lock" in log


# -- PostgreSQL unreachable -------------------------------------------------------------------


class TCPProxy:
    """Forwards 127.0.0.1:port to a target; :meth:`cut` closes everything and refuses new
    connections until :meth:`restore`."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.accepted = 0

    def restore(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _addr = sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.accepted += 1
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.mark.postgres
def test_postgres_unreachable_for_a_while(tmp_path, pg_url):
    """The connection to PostgreSQL is cut and refused for a while: polls fail and say so, the
    daemon keeps running, and when the server is back it catches up with nothing lost."""
    target = urlsplit(pg_url)
    proxy = TCPProxy((target.hostname or "127.0.0.1", target.port or 5432))
    proxy.restore()
    state = _via(pg_url, proxy.port)

    @contextlib.contextmanager
    def outage(_daemon: DaemonProcess) -> Iterator[None]:
        proxy.cut()
        try:
            time.sleep(PG_OUTAGE_S)
            yield
        finally:
            proxy.restore()

    try:
        log = _through_fault(tmp_path, state, outage, r"(?i)connection|server closed|refused")
    finally:
        proxy.cut()
    assert log
    assert proxy.accepted >= 2  # the daemon connected again after the outage


# -- disk full and read-only (a tmpfs the test mounts) ----------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system for the disk-full test needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def _fill(path: Path) -> Path:
    """Fill the file system at ``path`` to the last byte; the file to delete to free it."""
    filler = path / "filler"
    with filler.open("wb", buffering=0) as f:
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")
    return filler


def test_disk_full_mid_run_then_space_frees_up(tmp_path):
    """The state's disk fills up while polls commit and deliveries are recorded: the failures
    are logged, nothing is half-written, and once space is back everything arrives."""
    with _tmpfs(tmp_path / "small", "16m") as disk:
        state = disk / "state.db"

        @contextlib.contextmanager
        def full(_daemon: DaemonProcess) -> Iterator[None]:
            filler = _fill(disk)
            try:
                yield
            finally:
                filler.unlink()

        _through_fault(tmp_path, str(state), full, r"database or disk is full")
        assert StateView(state).exists()
        db = sqlite3.connect(state)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()


def test_read_only_state_at_start(tmp_path, items_api, receiver):
    """A state on a read-only file system: ``run`` refuses with a message and exit 74 (no
    traceback), and once writable the pending deliveries go out."""
    api, api_server = items_api
    api.set({"id": 1, "v": 0})
    with _tmpfs(tmp_path / "small", "16m") as disk:
        state = disk / "state.db"
        config = _config(tmp_path, str(state), api_server, receiver)
        receiver.handler = lambda _r: Reply(503)
        first = run_cli("run", "--once", "--config", str(config))
        assert first.returncode == 75, first.stderr  # the baseline's event is pending
        receiver.handler = lambda _r: Reply(204)
        api.set({"id": 1, "v": 1}, {"id": 2, "v": 0})
        _remount(disk, "ro")
        try:
            refused = run_cli("run", "--once", "--config", str(config))
            assert refused.returncode == 74, (refused.returncode, refused.stderr)
            assert "Traceback" not in refused.stderr
            assert refused.stderr.startswith("pollbridge: "), refused.stderr
        finally:
            _remount(disk, "rw")
        again = run_cli("run", "--once", "--config", str(config))
        assert again.returncode == 0, again.stderr
        events = {e.id for e in StateView(state).event_list()}
        ok = {r.headers["webhook-id"] for r in receiver.requests if r.path == "/hooks"}
        assert len(events) == 3 and events <= ok
        assert StateView(state).states() == {"delivered": 3}


def test_status_reads_a_state_on_a_read_only_file_system(tmp_path, items_api, receiver):
    """The read verbs open the state read-only (docs/deployment.md), so a state on a read-only
    file system (a stopped service's disk mounted ro, a backup) can still be inspected."""
    api, api_server = items_api
    api.set({"id": 1, "v": 0})
    with _tmpfs(tmp_path / "small", "16m") as disk:
        state = disk / "state.db"
        config = _config(tmp_path, str(state), api_server, receiver)
        assert run_cli("run", "--once", "--config", str(config)).returncode == 0
        _remount(disk, "ro")
        try:
            status = run_cli("status", "--config", str(config))
            events = run_cli("events", "--json", "--config", str(config))
        finally:
            _remount(disk, "rw")
    assert status.returncode == 0, status.stderr
    assert SOURCE in status.stdout
    assert events.returncode == 0, events.stderr
