"""A "changed since" list API (Zendesk / Jira style) for incremental sources.

``GET /tickets?updated_since=<RFC 3339>&page=N&per_page=M`` answers the tickets whose
``updated_at`` is at or after ``updated_since`` (every ticket without it), sorted by
``updated_at`` then ``id`` (``descending = True`` reverses it), a page at a time:
``{"tickets": [...], "next_page": url | null}``. The API's clock is its own (``tick``), so
what the bridge's host clock says never matters. A test can hold a page until it releases
it (``hold_page``), to kill the daemon while a poll is between pages.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from tests.support.servers import Reply, Request

API_EPOCH = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class ChangedSinceAPI:
    """The handler: ``serve(ChangedSinceAPI(count=25))``."""

    def __init__(self, count: int = 25, per_page: int = 10):
        self.lock = threading.Lock()
        self.per_page = per_page
        self.now = API_EPOCH
        self.descending = False
        self.tickets: dict[int, dict[str, Any]] = {}
        for i in range(1, count + 1):
            self.tickets[i] = {"id": i, "subject": f"ticket {i}", "status": "open"}
            self._touch(i)
        self.asked: list[str | None] = []
        """The ``updated_since`` of every first-page request, in order."""
        self.held: dict[int, threading.Event] = {}
        self.waiting: dict[int, threading.Event] = {}

    def _touch(self, ticket_id: int) -> None:
        self.now += timedelta(seconds=1)
        self.tickets[ticket_id]["updated_at"] = stamp(self.now)

    def change(self, ticket_id: int, **fields: Any) -> None:
        """Create or update one ticket; its ``updated_at`` moves to the API's next second."""
        with self.lock:
            ticket = self.tickets.setdefault(ticket_id, {"id": ticket_id})
            ticket.update(fields)
            self._touch(ticket_id)

    def remove(self, ticket_id: int) -> None:
        """A hard delete: gone from every answer, windows included."""
        with self.lock:
            self.tickets.pop(ticket_id, None)

    def hold_page(self, number: int) -> threading.Event:
        """Requests for page ``number`` wait until the returned event is set; the event in
        ``waiting[number]`` is set once one of them arrived."""
        release = threading.Event()
        with self.lock:
            self.held[number] = release
            self.waiting[number] = threading.Event()
        return release

    def __call__(self, req: Request) -> Reply:
        since = _arg(req, "updated_since")
        page = int(_arg(req, "page") or 1)
        per_page = int(_arg(req, "per_page") or self.per_page)
        with self.lock:
            held = self.held.get(page)
            if page == 1:
                self.asked.append(since)
        if held is not None:
            self.waiting[page].set()
            held.wait(30)
        with self.lock:
            rows = [dict(t) for t in self.tickets.values()]
        if since is not None:
            rows = [t for t in rows if _changed_since(t, datetime.fromisoformat(since))]
        rows.sort(key=lambda t: (str(t.get("updated_at")), t["id"]), reverse=self.descending)
        chunk = rows[(page - 1) * per_page : page * per_page]
        more = page * per_page < len(rows)
        next_page = None
        if more:
            query = {"page": page + 1, "per_page": per_page}
            if since is not None:
                query["updated_since"] = since
            next_page = f"http://{req.headers['host']}{req.path}?{urlencode(query)}"
        return Reply(200, {"tickets": chunk, "next_page": next_page})


def _changed_since(ticket: dict[str, Any], bound: datetime) -> bool:
    """A ticket whose updated_at is missing or garbled is in every window (as broken data)."""
    try:
        return datetime.fromisoformat(ticket["updated_at"]) >= bound
    except (KeyError, TypeError, ValueError):
        return True


def _arg(req: Request, name: str) -> str | None:
    values = req.query.get(name)
    return values[0] if values else None
