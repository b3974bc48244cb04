"""Fake APIs for event-log sources and confirmed deletes, for a :class:`TestServer`.

EventLogAPI   GET /events?page=&per_page=: a newest-first log of immutable entries, a bare
              JSON array with ``Link: <…>; rel="next"`` (GitHub's /events), an ETag per
              page and 304s
BlinkingList  GET /items: ``{"data": [...]}`` where chosen items are left out of the next
              few answers (an eventually consistent search index)
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from tests.support.servers import Reply, Request

BASE_TIME = 1_700_000_000


class EventLogAPI:
    """``serve(EventLogAPI())``; :meth:`emit` adds entries at the head of the log."""

    def __init__(self, entries: int = 0, page_size: int = 10) -> None:
        self.lock = threading.Lock()
        self.page_size = page_size
        self.log: list[dict[str, Any]] = []
        """Newest first."""
        self.next_id = 1
        self.slow_pages: dict[int, float] = {}
        """Page number -> seconds its answer is held back (to kill a poll in the middle)."""
        self.emit(entries)

    def emit(self, n: int = 1) -> list[str]:
        """Add ``n`` entries (the newest first in the log); their ids."""
        with self.lock:
            new = []
            for _ in range(n):
                number = self.next_id
                self.next_id += 1
                new.append(
                    {
                        "id": str(number),
                        "type": "PushEvent",
                        "created_at": BASE_TIME + number,
                        "payload": {"n": number},
                    }
                )
            self.log[:0] = reversed(new)
            return [e["id"] for e in new]

    def __call__(self, req: Request) -> Reply:
        if req.path != "/events":
            return Reply(404, {"error": "not found"})
        page = int((req.query.get("page") or ["1"])[0])
        size = int((req.query.get("per_page") or [str(self.page_size)])[0])
        with self.lock:
            start = (page - 1) * size
            chunk = self.log[start : start + size]
            more = start + size < len(self.log)
        body = json.dumps(chunk).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"etag": etag}
        if more:
            headers["link"] = f'</events?page={page + 1}&per_page={size}>; rel="next"'
        delay = self.slow_pages.get(page, 0.0)
        if req.headers.get("if-none-match") == etag:
            return Reply(304, b"", headers, delay_s=delay)
        return Reply(200, body, headers, delay_s=delay)


class BlinkingList:
    """``serve(BlinkingList(n))``: items 1..n; :meth:`blink` hides items for a few answers."""

    def __init__(self, count: int = 12) -> None:
        self.lock = threading.Lock()
        self.items = {i: {"id": i, "name": f"item {i}"} for i in range(1, count + 1)}
        self.hidden: dict[int, int] = {}
        """Item id -> how many more answers leave it out."""

    def blink(self, ids: list[int], answers: int) -> None:
        with self.lock:
            for i in ids:
                self.hidden[i] = answers

    def remove(self, ids: list[int]) -> None:
        with self.lock:
            for i in ids:
                self.items.pop(i, None)

    def __call__(self, req: Request) -> Reply:
        with self.lock:
            shown = [it for i, it in self.items.items() if self.hidden.get(i, 0) <= 0]
            for i in list(self.hidden):
                self.hidden[i] -= 1
        return Reply(200, {"data": shown})
