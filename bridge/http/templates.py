"""Listener templates rendered off the event loop, each stopped at its deadline.

A template is someone else's code: it runs in a small thread pool, so the event loop (every
other listener, the polls, ``/healthz``, signals) goes on while it runs. Its time counts from
when its thread starts it (a render waiting behind another is not failed for the wait). The
sandbox checks the deadline at each call, ``range`` step and piece of output; a loop that
meets none of those (nested ``for`` over the event's own lists) is stopped by an exception
raised in its thread at the deadline (CPython's ``PyThreadState_SetAsyncExc``).
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bridge.core.render import BodyFormat, RenderFailed, render_body
from bridge.models import Event

RENDER_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pollbridge-render")
_GRACE_S = 0.5
"""How long a stopped render may take to notice before its delivery fails anyway."""


class _Stopped(BaseException):
    """Raised in a render thread that ran past its deadline (past any ``except Exception``)."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    # exc None clears an exception set but not yet raised
    target = None if exc is None else ctypes.py_object(exc)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), target)


class _Job:
    """One render, which the waiting side can stop once it has started."""

    def __init__(self, fmt: BodyFormat, event: Event, limit_s: float) -> None:
        self.fmt = fmt
        self.event = event
        self.limit_s = limit_s
        self.started: float | None = None
        self._thread: int | None = None
        self._done = False
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        try:
            with self._lock:
                self._thread = threading.get_ident()
                self.started = time.monotonic()
            return render_body(self.fmt, self.event, deadline=self.started + self.limit_s)
        except _Stopped:
            raise RenderFailed(self.timeout_message()) from None
        finally:
            with self._lock:
                self._done = True
                if self._thread is not None:
                    _raise_in(self._thread, None)  # a stop that came too late goes nowhere

    def stop(self) -> None:
        with self._lock:
            if self._thread is not None and not self._done:
                _raise_in(self._thread, _Stopped)

    def timeout_message(self) -> str:
        return f"{self.fmt.label or 'template'}: rendering took longer than {self.limit_s:g}s"


async def render_in_thread(fmt: BodyFormat, event: Event, limit_s: float) -> bytes:
    """``render_body`` in a render thread, stopped after ``limit_s`` of its own time."""
    job = _Job(fmt, event, limit_s)
    future = asyncio.get_running_loop().run_in_executor(RENDER_THREADS, job)
    stopped = False
    while True:
        if job.started is None:
            wait_s = limit_s
        else:
            wait_s = job.started + limit_s + (_GRACE_S if stopped else 0.0) - time.monotonic()
        try:
            async with asyncio.timeout(max(wait_s, 0.001)):
                return await asyncio.shield(future)
        except _Stopped:
            raise RenderFailed(job.timeout_message()) from None
        except TimeoutError:
            if job.started is None:
                continue  # still queued behind other renders: its time has not started
            if stopped:
                raise RenderFailed(job.timeout_message()) from None
            job.stop()
            stopped = True
