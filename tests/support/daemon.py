"""Run the real ``pollbridge`` as a subprocess, the way an operator would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]


def pollbridge_cmd(*args: str) -> list[str]:
    """The command line for ``pollbridge ARGS`` using this checkout's code."""
    return [sys.executable, "-m", "bridge", *args]


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 30, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a pollbridge verb to completion and capture its output."""
    return subprocess.run(
        pollbridge_cmd(*args),
        env=env_for(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd,
        check=False,
    )


class DaemonProcess:
    """``pollbridge run`` in the background; stop it with SIGTERM or kill it with SIGKILL."""

    def __init__(self, config: Path, *extra: str, env: dict[str, str] | None = None):
        self.log_path = config.parent / f"daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            pollbridge_cmd("run", "--config", str(config), *extra),
            env=env_for(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def terminate(self, timeout_s: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def kill(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait(10)
        self._log.close()
        return code

    def output(self) -> str:
        """Everything the daemon printed so far (also after it stopped)."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_output(self, pattern: str, timeout_s: float = 15, *, count: int = 1) -> re.Match[str]:
        """Block until the daemon's output matches ``pattern`` ``count`` times; return the last."""

        def found() -> re.Match[str] | None:
            matches = list(re.finditer(pattern, self.output()))
            if len(matches) >= count:
                return matches[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.output()}")
            return None

        return eventually(found, timeout_s, f"output matching {pattern!r}", self.output)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
        elif not self._log.closed:
            self._log.close()


def eventually(
    probe: Callable[[], T | None],
    timeout_s: float = 15,
    what: str = "a condition",
    context: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{extra}")
        time.sleep(0.05)
