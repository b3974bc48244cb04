"""Shared helpers for the benchmark scripts: tables, process stats, fast local HTTP servers.

The scripts run as ``python benchmarks/bench_X.py`` from the repository root; each puts the
checkout first on ``sys.path`` so it measures this tree's code, not some other installed copy.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_line() -> str:
    """One line naming the machine the figures come from."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({model}), "
        f"Python {platform.python_version()}, load average {load} at start"
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table, so the output can be pasted into docs/benchmarks.md."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")
    sys.stdout.flush()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"
    return str(value)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB (Linux /proc)."""
    rss = hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[idx]


class _RawHTTP(asyncio.Protocol):
    """A minimal HTTP/1.1 server protocol: reads each request, answers from ``respond``.

    Far cheaper than any framework, so the benchmarked client is what limits the rate.
    """

    def __init__(self, respond: Callable[[bytes, bytes, bytes], bytes]):
        self.respond = respond
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : stop if stop >= 0 else None].strip())
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body = self.buf[end + 4 : total]
            self.buf = self.buf[total:]
            request_line, _, headers = head.partition(b"\r\n")
            assert self.transport is not None
            self.transport.write(self.respond(request_line, headers, body))


async def serve_raw(
    respond: Callable[[bytes, bytes, bytes], bytes], port: int = 0
) -> asyncio.Server:
    """Start the raw server on 127.0.0.1; ``respond(request_line, headers, body) -> bytes``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _RawHTTP(respond), "127.0.0.1", port, backlog=1024, reuse_address=True
    )


def header_value(headers: bytes, name: bytes) -> bytes | None:
    """The value of one header in a raw header block (case-insensitive name)."""
    lower = headers.lower()
    at = lower.find(b"\n" + name.lower() + b":")
    if at < 0:
        at = 0 if lower.startswith(name.lower() + b":") else -1
        if at < 0:
            return None
        start = at + len(name) + 1
    else:
        start = at + len(name) + 2
    stop = headers.find(b"\r\n", start)
    return headers[start : stop if stop >= 0 else None].strip()


def wait_for_port_file(path: Path, timeout_s: float = 20) -> int:
    """Wait for a child to write the port it listens on into ``path``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.02)
    raise TimeoutError(f"no port in {path} after {timeout_s}s")
