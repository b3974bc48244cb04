"""A list API shaped like real ones, for a :class:`tests.support.servers.TestServer`.

One item list served in every pagination style pollbridge speaks, with ETag / Last-Modified
and 304s, Retry-After answers queued by the test, and OAuth2 client-credentials tokens that a
test can expire (revoke) to provoke 401s:

    /link     GitHub: ?page=&per_page=, ``Link: <…>; rel="next"``, bare JSON array
    /jsonapi  JSON:API: ?page[number]=, ``{"data": [...], "links": {"next": url|null}}``
    /cursor   ?cursor=, ``{"items": [...], "next_cursor": "…"|null}``
    /stripe   ?starting_after=&limit=, ``{"object": "list", "data": [...], "has_more": bool}``
    /page     ?page=&per_page=, bare JSON array; the last page is short or empty
    /offset   ?offset=&limit=, ``{"results": [...]}``
    /items    the whole list at once, ``{"data": [...]}``
    /oauth/token  POST grant_type=client_credentials
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from tests.support.servers import Reply, Request

CLIENT_ID = "client-1"
CLIENT_SECRET = "s3cret-client-value"
BASE_TIME = 1_700_000_000


class FakeAPI:
    """The handler: ``serve(FakeAPI())``. Edit ``items`` with :meth:`set_items`."""

    def __init__(self, count: int = 25, page_size: int = 10, aliases: dict[str, str] | None = None):
        self.aliases = aliases or {}
        """Real-looking path -> route, e.g. ``{"/v1/customers": "/stripe"}``."""
        self.lock = threading.Lock()
        self.page_size = page_size
        self.items: list[dict[str, Any]] = []
        self.version = 0
        self.set_items(
            [{"id": i, "name": f"item {i}", "status": "open"} for i in range(1, count + 1)]
        )
        self.queued: list[Reply] = []
        """Answers given, in order, to the next list requests (e.g. a 429)."""
        self.fail_pages: dict[int, Reply] = {}
        """Page number (1-based) -> the answer that page gets instead."""
        self.require_token = False
        self.valid_tokens: set[str] = set()
        self.token_lifetime_s = 3600
        self.token_requests = 0
        self.rejected = 0
        self.issued = 0

    def set_items(self, items: list[dict[str, Any]]) -> None:
        """Replace the list; ETags and Last-Modified move on."""
        with self.lock:
            self.items = sorted(items, key=lambda it: it["id"])
            self.version += 1

    def keep(self, ids: set[int]) -> None:
        with self.lock:
            self.items = [it for it in self.items if it["id"] in ids]
            self.version += 1

    def revoke_tokens(self) -> None:
        """Every token issued so far expires now: the next API call answers 401."""
        with self.lock:
            self.valid_tokens.clear()

    # -- handler ------------------------------------------------------------------------------

    def __call__(self, req: Request) -> Reply:
        if req.path == "/oauth/token":
            return self._token(req)
        if self.require_token:
            auth = req.headers.get("authorization", "")
            token = auth.removeprefix("Bearer ")
            with self.lock:
                valid = auth.startswith("Bearer ") and token in self.valid_tokens
            if not valid:
                self.rejected += 1
                return Reply(401, {"error": "invalid_token"}, {"www-authenticate": "Bearer"})
        with self.lock:
            if self.queued:
                return self.queued.pop(0)
            items = list(self.items)
            version = self.version
        route = _ROUTES.get(self.aliases.get(req.path, req.path))
        if route is None:
            return Reply(404, {"error": f"no route {req.path}"})
        window, shape = route
        start, size = window(self, req, items)
        number = start // size + 1
        if number in self.fail_pages:
            return self.fail_pages[number]
        chunk = items[start : start + size]
        more = start + size < len(items)
        base = f"http://{req.headers['host']}{req.path}"
        return _conditional(req, shape(chunk, start, size, more, base), version)

    def _token(self, req: Request) -> Reply:
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = req.headers.get("authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            client_id, secret = unquote(user), unquote(password)
        self.token_requests += 1
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        if client_id != CLIENT_ID or secret != CLIENT_SECRET:
            return Reply(401, {"error": "invalid_client", "error_description": "bad client"})
        with self.lock:
            self.issued += 1
            token = f"token-{self.issued}"
            self.valid_tokens.add(token)
        return Reply(
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s},
        )


# Each route: a window (which slice of the list a request asks for: start, size) and a shape
# (the answer for that slice).
Window = Callable[[FakeAPI, Request, list[Any]], tuple[int, int]]
Shape = Callable[[list[Any], int, int, bool, str], Reply]


def _link(chunk: list[Any], start: int, size: int, more: bool, base: str) -> Reply:
    page = start // size + 1
    headers = {}
    if more:
        nxt = f"{base}?page={page + 1}&per_page={size}"
        last = f"{base}?page={page + 5}&per_page={size}"
        # GitHub sends several relations; next is not always the first
        headers["link"] = f'<{last}>; rel="last", <{nxt}>; rel="next"'
    return Reply(200, chunk, headers)


def _jsonapi(chunk: list[Any], start: int, size: int, more: bool, base: str) -> Reply:
    page = start // size + 1
    nxt = f"{base}?{quote('page[number]')}={page + 1}" if more else None
    resources = [
        {
            "type": "things",
            "id": str(it["id"]),
            "attributes": {k: v for k, v in it.items() if k != "id"},
        }
        for it in chunk
    ]
    return Reply(200, {"data": resources, "links": {"next": nxt}, "meta": {}})


def _cursor(chunk: list[Any], start: int, size: int, more: bool, base: str) -> Reply:
    return Reply(200, {"items": chunk, "next_cursor": f"c{start + size}" if more else None})


def _stripe(chunk: list[Any], start: int, size: int, more: bool, base: str) -> Reply:
    return Reply(200, {"object": "list", "data": chunk, "has_more": more, "url": "/v1/things"})


def _bare(chunk: list[Any], start: int, size: int, more: bool, base: str) -> Reply:
    return Reply(200, chunk)


def _offset(chunk: list[Any], start: int, size: int, more: bool, base: str) -> Reply:
    return Reply(200, {"results": chunk, "count": len(chunk)})


def _wrapped(chunk: list[Any], start: int, size: int, more: bool, base: str) -> Reply:
    return Reply(200, {"data": chunk})


def _pages(param: str, size_param: str | None) -> Window:
    def window(api: FakeAPI, req: Request, items: list[Any]) -> tuple[int, int]:
        size = int(_arg(req, size_param) or api.page_size) if size_param else api.page_size
        return (int(_arg(req, param) or 1) - 1) * size, size

    return window


def _cursor_window(api: FakeAPI, req: Request, items: list[Any]) -> tuple[int, int]:
    cursor = _arg(req, "cursor")
    return (int(cursor[1:]) if cursor else 0), api.page_size


def _stripe_window(api: FakeAPI, req: Request, items: list[Any]) -> tuple[int, int]:
    size = int(_arg(req, "limit") or api.page_size)
    after = _arg(req, "starting_after")
    ids = [str(it["id"]) for it in items]
    if after is None:
        return 0, size
    return (ids.index(after) + 1 if after in ids else len(ids)), size


def _offset_window(api: FakeAPI, req: Request, items: list[Any]) -> tuple[int, int]:
    return int(_arg(req, "offset") or 0), int(_arg(req, "limit") or api.page_size)


def _everything(api: FakeAPI, req: Request, items: list[Any]) -> tuple[int, int]:
    return 0, max(1, len(items))


_ROUTES: dict[str, tuple[Window, Shape]] = {
    "/link": (_pages("page", "per_page"), _link),
    "/jsonapi": (_pages("page[number]", None), _jsonapi),
    "/cursor": (_cursor_window, _cursor),
    "/stripe": (_stripe_window, _stripe),
    "/page": (_pages("page", "per_page"), _bare),
    "/offset": (_offset_window, _offset),
    "/items": (_everything, _wrapped),
}


def _arg(req: Request, name: str) -> str | None:
    values = req.query.get(name)
    return values[0] if values else None


def _conditional(req: Request, reply: Reply, version: int) -> Reply:
    """ETag from the page's bytes, Last-Modified from the list's version; 304 when they match."""
    body = reply.encoded()
    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
    modified = formatdate(BASE_TIME + version, usegmt=True)
    headers = {**reply.headers, "etag": etag, "last-modified": modified}
    if_none = req.headers.get("if-none-match")
    if_since = req.headers.get("if-modified-since")
    if if_none is not None:
        if etag in [t.strip() for t in if_none.split(",")]:
            return Reply(304, b"", headers)
    elif (
        if_since is not None and parsedate_to_datetime(if_since).timestamp() >= BASE_TIME + version
    ):
        return Reply(304, b"", headers)
    return Reply(reply.status, json.loads(body) if body else b"", headers)
