"""The daemon's analysis workers: large responses are analysed in other processes.

``orjson.loads`` of a large body holds the GIL for the whole document (1.4-1.8 s at 1M items),
and the items it builds are most of a poll's memory. A response of at least
``[bridge] analysis_worker_min_bytes`` is therefore spooled to a temporary file as it is read
(:mod:`bridge.http.spool`) and handed to one of ``[bridge] analysis_workers`` worker processes
(:mod:`bridge.analysis_worker`), with the previous snapshot's hashes; what comes back is what
the commit needs: the item count, the created and updated items and the deleted keys. The
messages are sent and decoded in a thread a chunk at a time, so the event loop never waits on
a parse and the daemon never holds the response's object tree.

A worker that dies (a crash, the kernel's out-of-memory killer), runs out of memory, or takes
longer than the source's ``timeout`` to start or to finish fails that poll with a
:class:`~bridge.errors.PollError` naming the source; it is stopped and a new one started for
the next analysis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import IO, Any, cast

import orjson

import bridge
from bridge.analysis import gc_paused
from bridge.analysis_worker import STREAM_MIN_BYTES, Job, read_message, write_message
from bridge.config import SourceConfig
from bridge.core.analysis import Planned, SnapshotStep, plan_from_upserts
from bridge.errors import ExtractError, PollError
from bridge.http.spool import SpoolPolicy
from bridge.models import Item

log = logging.getLogger("pollbridge.analysis")

WORKER_COMMAND = (sys.executable, "-m", "bridge.analysis_worker")
_HASH_CHUNK = 5_000
_STOP_WAIT_S = 5.0
_START_WAIT_S = 60.0
"""How long a worker started ahead of need (``warm``) may take to be ready."""


class _Died(Exception):
    """The worker's pipe closed: it is gone."""


class _Worker:
    """One worker process and its two pipes; used by one analysis at a time."""

    def __init__(self, command: Sequence[str]) -> None:
        env = dict(os.environ)
        # the worker imports the same bridge package as this process, wherever it comes from
        root = str(Path(bridge.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(  # noqa: S603 - WORKER_COMMAND, or a test's stand-in
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C is the daemon's to handle
        )
        self.stdin = cast(IO[bytes], self.proc.stdin)
        self.stdout = cast(IO[bytes], self.proc.stdout)
        self.healthy = True
        self.last_run: dict[str, float] = {}
        self.kept: tuple[str, int] | None = None
        """The (source, snapshot version) whose previous hashes the process holds from its
        last job, so that the next job of that source sends none, or only a commit's change."""

    def wait_ready(self) -> None:
        """Block until the worker says it is ready (it has imported what it needs); runs in a
        thread. Raise _Died if it ends first."""
        try:
            ready, _ = read_message(self.stdout)
        except (EOFError, OSError, ValueError):
            ready = b""
        if ready != b"R":
            self.healthy = False
            self.stop()
            raise _Died(f"could not start: it {self.why_gone()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exchange(
        self, job: Job, old_hashes: Mapping[str, str], step: SnapshotStep | None = None
    ) -> tuple[int, list[Item], list[str]] | dict[str, str]:
        """Send ``job`` and the hashes (all, none or ``step``, as ``job.hashes`` says), read
        the result; runs in a thread."""
        self.last_run = {}
        try:
            write_message(self.stdin, b"J", job.encode())
            if job.hashes == "full":
                self._send_pairs(old_hashes.keys(), old_hashes.values())
            elif job.hashes == "step" and step is not None:
                removed = iter(step.deleted)
                while chunk := list(islice(removed, _HASH_CHUNK)):
                    write_message(self.stdin, b"K", orjson.dumps(chunk))
                self._send_pairs((k for k, _ in step.upserted), (h for _, h in step.upserted))
            write_message(self.stdin, b"G", b"")
            self.stdin.flush()
            upserts: list[Item] = []
            deleted: list[str] = []
            while True:
                kind, payload = read_message(self.stdout)
                if kind == b"U":
                    # as an in-process analysis does: once decoded, the items are frozen, so
                    # the collections the commit's work triggers do not walk them (nor the
                    # rest of the heap: one took 56 ms at 1M items and 10,000 changes)
                    with gc_paused():
                        upserts.extend(_decode_upserts(payload))
                elif kind == b"S":
                    upserts = []
                elif kind == b"D":
                    deleted.extend(orjson.loads(payload))
                elif kind == b"E":
                    end = orjson.loads(payload)
                    self.last_run = {"cpu_s": end["cpu_s"], "peak_rss_kib": end["peak_rss_kib"]}
                    return end["count"], upserts, deleted
                elif kind == b"X":
                    error: dict[str, str] = orjson.loads(payload)
                    if error["kind"] == "memory":
                        self.healthy = False  # its heap is spent: a fresh one takes the next
                    return error
                else:
                    self.healthy = False
                    raise _Died(f"sent an unknown message {kind!r}")
        except (EOFError, OSError, ValueError) as exc:
            self.healthy = False
            raise _Died(str(exc)) from exc

    def _send_pairs(self, keys: Iterable[str], digests: Iterable[str]) -> None:
        # two arrays: a third cheaper for the worker to decode than [key, hash] pairs; in
        # small chunks, as each holds the GIL (and so the event loop) while it is encoded
        keys, digests = iter(keys), iter(digests)
        while chunk := list(islice(keys, _HASH_CHUNK)):
            write_message(
                self.stdin, b"H", orjson.dumps([chunk, list(islice(digests, _HASH_CHUNK))])
            )

    def kill(self) -> None:
        self.healthy = False
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def stop(self) -> None:
        """Close the pipes and reap the process (killed if it does not end by itself)."""
        for pipe in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            self.proc.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()

    def why_gone(self) -> str:
        """How the process ended, for the poll's error (call after it is gone)."""
        try:
            code = self.proc.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return "stopped answering"
        if code < 0:
            name = signal.Signals(-code).name
            hint = (
                " (the kernel's out-of-memory killer sends it)" if -code == signal.SIGKILL else ""
            )
            return f"was killed by {name}{hint}"
        return f"exited with status {code}"


class AnalysisPool:
    """Up to ``workers`` analysis worker processes, started when first needed.

    ``min_bytes`` is the response size from which a single-page response is spooled and
    analysed in a worker (:meth:`spool_policy`). ``command`` starts a worker (tests stand in
    a failing one).
    """

    def __init__(
        self,
        workers: int,
        *,
        min_bytes: int,
        stream_min_bytes: int = STREAM_MIN_BYTES,
        command: Sequence[str] = WORKER_COMMAND,
    ) -> None:
        self.command = tuple(command)
        self.workers = workers
        self.min_bytes = min_bytes
        self.stream_min_bytes = stream_min_bytes
        self._idle: list[_Worker] = []
        self._busy = 0
        self._free: asyncio.Condition | None = None
        self._closed = False
        self._warming: asyncio.Task[None] | None = None
        self.last_run: dict[str, float] = {}
        """The last analysis's CPU seconds and the worker's peak RSS (for logs, benchmarks)."""
        self.last_sent = ""
        """How the last analysis's previous hashes went to the worker: ``full``, ``kept``
        (none: it held them) or ``step`` (only the last commit's change)."""

    async def warm(self, start_timeout_s: float = _START_WAIT_S) -> None:
        """Start a worker now, so the first large response does not wait for one."""
        if self.workers > 0 and not self._idle and not self._closed:
            try:
                await self._release(await self._acquire(start_timeout_s))
            except _Died as exc:
                log.warning("the analysis worker %s", exc)

    def spool_policy(self, source: SourceConfig) -> SpoolPolicy | None:
        """When ``source``'s response is spooled for a worker, or None (always in process).

        A worker is started as soon as a response is spooled, while the rest of it arrives.

        A paginated list is analysed in process: its pages' items are combined (a key on
        two pages fails the list) and each page's document is needed for the next link. So
        are GraphQL sources (their errors are read from the document), sources with a detail
        fetch (their list entries are needed in process) and append-mode sources.
        """
        if self.workers == 0 or self._closed or not _whole_snapshot(source):
            return None
        start_timeout_s = source.timeout.total_seconds()
        return SpoolPolicy(self.min_bytes, lambda: self._prestart(start_timeout_s))

    def _prestart(self, start_timeout_s: float) -> None:
        if self._warming is None or self._warming.done():
            task = self.warm(start_timeout_s)
            self._warming = asyncio.get_running_loop().create_task(task)

    def resize(self, workers: int, min_bytes: int) -> None:
        """Take a reloaded ``[bridge]``: more workers start when needed, extra idle ones stop."""
        self.workers = workers
        self.min_bytes = min_bytes
        while len(self._idle) + self._busy > workers and self._idle:
            _stop_soon(self._idle.pop())
        if self._free is not None:
            self._notify()

    def _notify(self) -> None:
        async def wake(cond: asyncio.Condition) -> None:
            async with cond:
                cond.notify_all()

        if self._free is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: nobody is waiting
                asyncio.get_running_loop().create_task(wake(self._free))

    async def analyse(
        self,
        source: SourceConfig,
        spool: Path,
        content_type: str | None,
        url: str,
        old_hashes: Mapping[str, str],
        *,
        keep_all: bool,
        version: int | None = None,
        step: SnapshotStep | None = None,
    ) -> Planned:
        """Analyse the spooled response of ``source`` in a worker; raise PollError on failure.

        ``version`` is the snapshot version ``old_hashes`` are of, and ``step`` the change
        that made it from the version before, if known: a worker that still holds the
        hashes of that version (or of the one before) is sent none (or only the change)
        instead of all of them.
        """
        spec = source.spec
        job = Job(
            source=source.name,
            path=str(spool),
            format=source.format,
            content_type=content_type,
            delimiter=source.format_options.delimiter,
            encoding=source.format_options.encoding,
            items=spec.items.text,
            key=tuple(p.text for p in spec.key),
            ignore=tuple(p.text for p in spec.ignore),
            fields=tuple(p.text for p in spec.fields),
            keep_all=keep_all,
            stream_min_bytes=self.stream_min_bytes,
        )
        timeout_s = source.timeout.total_seconds()
        try:
            worker = await self._acquire(timeout_s)
        except _Died as exc:
            raise PollError(source.name, f"the analysis worker {exc}", url=url) from exc
        job, sent = _what_to_send(job, worker.kept, version, step)
        self.last_sent = job.hashes
        worker.kept = None  # until the exchange ends: what it holds is then known again
        try:
            result = await self._run(worker, job, old_hashes, sent, timeout_s, url)
            if version is not None and not (
                isinstance(result, dict) and result["kind"] == "memory"
            ):
                worker.kept = (source.name, version)
        finally:
            await self._release(worker)
        if worker.last_run:
            self.last_run = worker.last_run
            log.debug(
                "poll %s analysed in worker pid %d: %.3fs CPU, peak RSS %d KiB",
                source.name,
                worker.pid,
                worker.last_run["cpu_s"],
                worker.last_run["peak_rss_kib"],
                extra={"source": source.name},
            )
        if isinstance(result, dict):
            if result["kind"] == "memory":
                raise PollError(
                    source.name,
                    f"{result['message']}; the worker is replaced",
                    url=url,
                )
            raise ExtractError(source.name, result["message"], url=url)
        count, upserts, deleted = result
        return await asyncio.to_thread(plan_from_upserts, count, upserts, deleted, old_hashes)

    async def _run(
        self,
        worker: _Worker,
        job: Job,
        old_hashes: Mapping[str, str],
        step: SnapshotStep | None,
        timeout_s: float,
        url: str,
    ) -> tuple[int, list[Item], list[str]] | dict[str, str]:
        exchange = asyncio.ensure_future(asyncio.to_thread(worker.exchange, job, old_hashes, step))
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(exchange)
        except TimeoutError:
            worker.kill()
            await _settled(exchange)
            raise PollError(
                job.source,
                f"the analysis worker (pid {worker.pid}) did not finish within the source's "
                f"timeout of {timeout_s:g}s; it was stopped and is replaced",
                url=url,
            ) from None
        except _Died:
            why = await asyncio.to_thread(worker.why_gone)
            raise PollError(
                job.source,
                f"the analysis worker (pid {worker.pid}) {why} while analysing the response; "
                "nothing was recorded, and a new worker takes the next poll",
                url=url,
            ) from None
        except BaseException:  # cancelled (shutdown): the worker's state is unknown
            worker.kill()
            exchange.add_done_callback(_consume)
            raise

    async def _acquire(self, start_timeout_s: float = _START_WAIT_S) -> _Worker:
        """A worker for one analysis: an idle one, or a new one that must be ready within
        ``start_timeout_s`` (a worker that hangs on start-up is stopped)."""
        if self._closed:
            raise RuntimeError("the analysis pool is closed")
        if self._free is None:
            self._free = asyncio.Condition()
        async with self._free:
            await self._free.wait_for(lambda: self._busy < max(1, self.workers))
            self._busy += 1
        while self._idle:
            worker = self._idle.pop()
            if worker.proc.poll() is None:
                return worker
            # died while idle (killed from outside): nothing was lost, start another
            log.warning("analysis worker (pid %d) %s while idle", worker.pid, worker.why_gone())
            worker.stop()  # it has ended: this only closes its pipes
        try:
            worker = await asyncio.to_thread(_Worker, self.command)
        except OSError as exc:  # the interpreter cannot be started at all
            await self._release(None)
            raise _Died(f"could not start: {exc}") from exc
        except BaseException:
            await self._release(None)
            raise
        ready = asyncio.ensure_future(asyncio.to_thread(worker.wait_ready))
        try:
            async with asyncio.timeout(start_timeout_s):
                await asyncio.shield(ready)
        except TimeoutError:
            worker.kill()  # its pipe closes: the waiting thread returns
            await _settled(ready)
            await asyncio.to_thread(worker.stop)
            await self._release(None)
            raise _Died(
                f"(pid {worker.pid}) did not start within {start_timeout_s:g}s; it was "
                "stopped, and a new one is started for the next poll"
            ) from None
        except BaseException:  # it could not start, or the poll was cancelled (shutdown)
            worker.kill()
            await _settled(ready)
            await asyncio.to_thread(worker.stop)
            await self._release(None)
            raise
        log.debug("analysis worker started (pid %d)", worker.pid)
        return worker

    async def _release(self, worker: _Worker | None) -> None:
        if worker is not None:
            keep = worker.healthy and not self._closed
            keep = keep and len(self._idle) + self._busy <= self.workers
            if keep:
                self._idle.append(worker)
            else:
                await asyncio.to_thread(worker.stop)
                if not worker.healthy:
                    log.warning("analysis worker (pid %d) replaced", worker.pid)
        assert self._free is not None  # noqa: S101 - set by _acquire
        async with self._free:
            self._busy -= 1
            self._free.notify()

    @property
    def idle_pids(self) -> list[int]:
        """The process ids of the workers waiting for work."""
        return [w.pid for w in self._idle]

    async def aclose(self) -> None:
        """Stop every idle worker; a busy one is stopped when its poll is cancelled."""
        self._closed = True
        if self._warming is not None:
            await _settled(self._warming)  # a worker being started is stopped as it arrives
        idle, self._idle = self._idle, []
        for worker in idle:
            await asyncio.to_thread(worker.stop)


def _decode_upserts(payload: bytes) -> list[Item]:
    return [
        Item(tuple(key) if type(key) is list else key, text, value, digest)
        for key, text, value, digest in orjson.loads(payload)
    ]


def _what_to_send(
    job: Job, kept: tuple[str, int] | None, version: int | None, step: SnapshotStep | None
) -> tuple[Job, SnapshotStep | None]:
    """``job`` saying how the previous hashes come, and the step to send (if that is how)."""
    if version is None:
        return job, None
    if kept == (job.source, version):
        return replace(job, version=version, hashes="kept", base=version), None
    if kept == (job.source, version - 1) and step is not None and step.from_version == version - 1:
        return replace(job, version=version, hashes="step", base=version - 1), step
    return replace(job, version=version, hashes="full"), None


def _whole_snapshot(source: SourceConfig) -> bool:
    """Whether ``source``'s response alone is its snapshot, so a worker can analyse it."""
    return (
        source.page_spec is None
        and source.graphql is None
        and source.detail is None
        and source.mode == "snapshot"
    )


def _stop_soon(worker: _Worker) -> None:
    """Stop ``worker`` in a thread when a loop runs (a reload), else now."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        worker.stop()
        return
    loop.run_in_executor(None, worker.stop)


async def _settled(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(Exception):
        await task


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
