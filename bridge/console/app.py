"""The console's routes under ``/ui/``: pages, their ``?format=json`` twins, login and actions.

Every store call is one bounded query (at most ``PAGE_ROWS`` rows a page) that the store runs
off the event loop; big pages are rendered in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import jinja2
import orjson
from aiohttp import web

from bridge import state_view
from bridge.console import security, views
from bridge.console.actions import ActionResult, Actions
from bridge.console.history import PollHistory, last_day
from bridge.console.sparkline import bucket_counts, legend, sparkline_svg
from bridge.core.durations import parse_since
from bridge.core.render import BodyFormat, RenderFailed, render_body
from bridge.display import stamp
from bridge.errors import StoreError
from bridge.models import CHANGE_TYPES, Event
from bridge.store import DeliveryQuery, EventQuery, Store

if TYPE_CHECKING:
    from bridge.config import Config

NOTICE_COOKIE = "pollbridge_notice"
DELIVERY_STATES = ("pending", "dead", "delivered", "coalesced")
SPARK_DELIVERIES = 2000
"""A listener's sparkline counts at most its newest this many deliveries of the last 24 h."""
RENDER_IN_THREAD_ROWS = 50

_POLL_NAMES = {"ok": "ok", "warn": "held", "bad": "failed"}
_DELIVERY_NAMES = {"ok": "delivered", "warn": "pending", "bad": "dead"}


@dataclass(frozen=True)
class Console:
    """What the console reads and calls; one per HTTP server."""

    store: Store
    runtime_status: Callable[[], Mapping[str, Any]]
    actions: Actions
    config: Callable[[], Config]
    redact: Callable[[str], str]
    polls: PollHistory
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @property
    def token(self) -> str | None:
        return self.config().bridge.http_token or None

    def scrub(self, value: Any) -> Any:
        """``value`` with every configured secret (and the console token) replaced."""
        token = self.token

        def redact(text: str) -> str:
            text = self.redact(text)
            return text.replace(token, "***") if token else text

        return views.redact_tree(value, redact)


_CONSOLE: web.AppKey[Console] = web.AppKey("console", Console)
_TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bridge.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["quote"] = lambda text: urllib.parse.quote(str(text), safe="")
    return env


def add_console(app: web.Application, console: Console) -> None:
    """Serve the console under ``/ui/`` of ``app``."""
    app[_CONSOLE] = console
    app[_TEMPLATES] = _environment()
    app.router.add_get("/ui", _to_overview)
    app.router.add_get("/ui/", overview)
    app.router.add_get("/ui/events", events)
    app.router.add_get("/ui/events/{event_id}", event)
    app.router.add_get("/ui/deliveries", deliveries)
    app.router.add_get("/ui/login", login_form)
    app.router.add_post("/ui/login", login)
    app.router.add_post("/ui/logout", logout)
    app.router.add_get("/ui/static/{name}", static)
    for path, handler in (
        ("/ui/events/{name}/replay", _action("replay_event")),
        ("/ui/listeners/{name}/replay-dead", _action("replay_dead")),
        ("/ui/listeners/{name}/resume", _action("resume_listener")),
        ("/ui/listeners/{name}/send-test", _action("send_test")),
        ("/ui/sources/{name}/accept", _action("accept_held")),
        ("/ui/sources/{name}/poll", _action("poll_now")),
    ):
        app.router.add_post(path, handler)


async def _to_overview(_request: web.Request) -> web.Response:
    return _redirect("/ui/")


# -- rendering ----------------------------------------------------------------------------


def _console(request: web.Request) -> Console:
    return request.app[_CONSOLE]


def _wants_json(request: web.Request) -> bool:
    return request.query.get("format") == "json"


def _json(console: Console, doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=views.to_json(console.scrub(doc)),
        status=status,
        content_type="application/json",
    )


def _auth(request: web.Request) -> str | None:
    console = _console(request)
    return security.authenticated(
        console.token, request.headers, request.cookies.get(security.SESSION_COOKIE)
    )


async def _page(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    console = _console(request)
    token = console.token
    auth = _auth(request)
    notice = request.cookies.get(NOTICE_COOKIE)
    base = {
        "now": stamp(console.clock()),
        "path": request.path_qs,
        "actions_enabled": bool(token),
        "logged_in": auth is not None,
        "csrf": security.csrf_token(token) if token and auth else "",
        "notice": None if notice is None else _notice_text(notice),
        "refresh": 0,
    }
    full = console.scrub({**base, **context})
    env = request.app[_TEMPLATES]
    rows = sum(len(v) for v in context.values() if isinstance(v, list))
    if rows > RENDER_IN_THREAD_ROWS:
        html = await asyncio.to_thread(env.get_template(template).render, full)
    else:
        html = env.get_template(template).render(full)
    response = web.Response(text=html, status=status, content_type="text/html")
    if notice is not None:
        response.del_cookie(NOTICE_COOKIE, path="/ui/")
    return response


def _notice_text(raw: str) -> dict[str, Any]:
    ok, _, text = urllib.parse.unquote(raw).partition(":")
    return {"ok": ok == "ok", "text": text[:500]}


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _back_to(request: web.Request, fallback: str, form: Mapping[str, Any]) -> str:
    """Where to go after a form: its ``next`` field when it is a console page."""
    target = str(form.get("next", ""))
    if target.startswith("/ui/") and "//" not in target and "\\" not in target:
        return target
    return fallback


def _bad_request(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=text + "\n")


# -- pages --------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    """``/ui/``: every source and listener, with its last 24 hours as a sparkline."""
    console = _console(request)
    now = console.clock()
    store = console.store
    runtime = console.runtime_status()
    doc = state_view.status_doc(
        store.location,
        runtime,
        await store.list_source_states(),
        await store.list_listener_states(),
        now,
        await store.tracked_counts(),
    )
    if _wants_json(request):
        return _json(console, doc)
    start, width, n = last_day(now)
    source_rows = []
    for s in doc["sources"]:
        activity = console.polls.buckets(s["name"], now)
        source_rows.append(_with_spark(views.source_row(s, activity, now), "polls", _POLL_NAMES))
    listener_rows = []
    for lst in doc["listeners"]:
        recent = await store.list_deliveries(
            DeliveryQuery(listener=lst["name"], since=start, limit=SPARK_DELIVERIES)
        )
        activity = bucket_counts(views.delivery_samples(recent), start, width, n)
        listener_rows.append(
            _with_spark(views.listener_row(lst, activity, now), "deliveries", _DELIVERY_NAMES)
        )
    daemon = doc["daemon"] or {}
    return await _page(
        request,
        "overview.html",
        {
            "title": "Overview",
            "daemon": daemon,
            "uptime": views.relative(state_view.parse_time(daemon.get("started_at")), now),
            "state_location": doc["state"],
            "sources": source_rows,
            "listeners": listener_rows,
            "refresh": 5,
        },
    )


def _with_spark(row: views.Row, what: str, names: Mapping[str, str]) -> dict[str, Any]:
    activity = row.activity
    assert activity is not None  # noqa: S101 - both callers give one
    counts = [(names[o], activity.outcome_total(o)) for o in ("ok", "warn", "bad")]
    text = legend(counts)
    return {
        "doc": row.doc,
        "state_text": row.state_text,
        "level": row.level,
        "times": row.times,
        "notes": row.notes,
        "spark": sparkline_svg(activity, label=f"{what} in the last 24 h: {text}", names=names),
        "spark_text": text,
    }


def _since(text: str | None, now: datetime) -> datetime | None:
    if not text:
        return None
    try:
        return parse_since(text, now)
    except ValueError as exc:
        raise _bad_request(f"since={exc}") from None


async def events(request: web.Request) -> web.Response:
    """``/ui/events``: the newest events, filtered like ``pollbridge events``."""
    console = _console(request)
    now = console.clock()
    q = request.query
    kind = (q.get("type") or "").removeprefix("item.") or None
    if kind is not None and kind not in CHANGE_TYPES:
        raise _bad_request(f"type={kind!r}: expected one of {', '.join(CHANGE_TYPES)}")
    page = views.Page(views.page_number(q.get("page")))
    query = EventQuery(
        source=q.get("source") or None,
        key=q.get("key") or None,
        type=kind,
        since=_since(q.get("since"), now),
        limit=page.fetch_limit,
    )
    records = await console.store.list_events(query)
    shown, more = page.slice(records)
    if _wants_json(request):
        return _json(
            console, [views.event_doc(r.event, dict(r.deliveries)) for r in reversed(shown)]
        )
    rows = [
        {
            "id": r.event.id,
            "time": stamp(r.event.timestamp),
            "ago": views.relative(r.event.timestamp, now),
            "source": r.event.source,
            "key": views.key_label(r.event),
            "type": r.event.type,
            "deliveries": sorted(r.deliveries.items()),
        }
        for r in shown
    ]
    sources = sorted({s.name for s in console.config().sources})
    return await _page(
        request,
        "events.html",
        {
            "title": "Events",
            "rows": rows,
            "filters": {k: q.get(k, "") for k in ("source", "key", "type", "since")},
            "sources": sources,
            "types": list(CHANGE_TYPES),
            "page": page.number,
            "more": more,
            "query": _query_without_page(request),
            "refresh": 0 if page.number > 1 else 10,
        },
    )


def _query_without_page(request: web.Request) -> str:
    pairs = [(k, v) for k, v in request.query.items() if k not in ("page", "format") and v]
    return urllib.parse.urlencode(pairs)


def _bodies(console: Console, event: Event, listeners: list[str]) -> list[dict[str, Any]]:
    """The exact body each listener was sent, grouped where listeners got the same bytes."""
    configured = {lst.name: lst for lst in console.config().listeners}
    groups: dict[tuple[bytes, str], list[str]] = {}
    for name in listeners or [""]:
        listener = configured.get(name)
        try:
            if listener is None:
                body, content_type = render_body(BodyFormat(), event), "application/json"
            else:
                body = render_body(listener.body_format, event)
                content_type = listener.body_format.content_type
        except RenderFailed as exc:
            body, content_type = f"(cannot build the body: {exc})".encode(), "text/plain"
        groups.setdefault((body, content_type), []).append(name)
    out = []
    for (body, content_type), names in groups.items():
        text = body.decode("utf-8", "replace")
        if "json" in content_type:
            with contextlib.suppress(orjson.JSONDecodeError):
                text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
        out.append({"listeners": [n for n in names if n], "type": content_type, "text": text})
    return out


async def event(request: web.Request) -> web.Response:
    """``/ui/events/{id}``: before and after side by side, the bodies sent, every attempt."""
    console = _console(request)
    event_id = request.match_info["event_id"]
    store = console.store
    found = await store.get_event(event_id)
    if found is None:
        if _wants_json(request):
            return _json(console, {"error": f"no event {event_id!r}"}, 404)
        return await _page(
            request,
            "error.html",
            {"title": "Not found", "message": f"No event {event_id} (pruned, or a typo?)"},
            status=404,
        )
    delivered = await store.list_deliveries(DeliveryQuery(event_id=found.id, limit=1000))
    attempts = {d.id: await store.list_attempts(d.id) for d in delivered}
    if _wants_json(request):
        return _json(console, views.show_doc(found, delivered, attempts))
    now = console.clock()
    return await _page(
        request,
        "event.html",
        {
            "title": f"Event {found.id}",
            "event": views.event_doc(found),
            "key": views.key_label(found),
            "time": stamp(found.timestamp),
            "ago": views.relative(found.timestamp, now),
            "fields": [vars(r) for r in views.field_rows(found)],
            "changes": [orjson.dumps(op).decode() for op in found.changes],
            "bodies": _bodies(console, found, [d.listener for d in delivered]),
            "deliveries": [
                {
                    "listener": d.listener,
                    "state": d.state,
                    "attempts": d.attempts,
                    "next": views.relative(d.next_at, now) if d.state == "pending" else "",
                    "delivered": views.relative(d.delivered_at, now),
                    "rows": views.attempt_rows(attempts.get(d.id, [])),
                }
                for d in delivered
            ],
        },
    )


async def deliveries(request: web.Request) -> web.Response:
    """``/ui/deliveries``: by listener and state, newest first, paged."""
    console = _console(request)
    now = console.clock()
    q = request.query
    state = q.get("state") or None
    if state is not None and state not in DELIVERY_STATES:
        raise _bad_request(f"state={state!r}: expected one of {', '.join(DELIVERY_STATES)}")
    page = views.Page(views.page_number(q.get("page")))
    query = DeliveryQuery(
        listener=q.get("listener") or None,
        state=state,
        since=_since(q.get("since"), now),
        limit=page.fetch_limit,
    )
    found = await console.store.list_deliveries(query)
    shown, more = page.slice(found)
    if _wants_json(request):
        return _json(console, [views.delivery_doc(d) for d in reversed(shown)])
    rows = [
        {
            "event_id": d.event_id,
            "listener": d.listener,
            "source": d.source,
            "key": d.key_text,
            "type": d.type,
            "state": d.state,
            "attempts": d.attempts,
            "when": (
                views.relative(d.next_at, now)
                if d.state == "pending"
                else views.relative(d.delivered_at or d.updated_at, now)
            ),
            "last": d.last_error or (f"HTTP {d.last_status}" if d.last_status else ""),
        }
        for d in shown
    ]
    return await _page(
        request,
        "deliveries.html",
        {
            "title": "Deliveries",
            "rows": rows,
            "filters": {k: q.get(k, "") for k in ("listener", "state", "since")},
            "listeners": sorted({lst.name for lst in console.config().listeners}),
            "states": list(DELIVERY_STATES),
            "page": page.number,
            "more": more,
            "query": _query_without_page(request),
        },
    )


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {"console.css": "text/css", "console.js": "text/javascript"}
    if name not in types:
        raise web.HTTPNotFound(text="not found\n")
    data = resources.files("bridge.console").joinpath("static", name).read_bytes()
    return web.Response(body=data, content_type=types[name], charset="utf-8")


# -- login and actions --------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    return await _page(
        request,
        "login.html",
        {"title": "Log in", "error": None, "next": request.query.get("next", "/ui/")},
    )


async def login(request: web.Request) -> web.Response:
    """The login form: the right token sets the session cookie (HttpOnly, SameSite=Strict)."""
    console = _console(request)
    form = await request.post()
    token = console.token
    error = None
    if token is None:
        error = "The console is read-only: set [bridge] http_token to enable actions."
    elif security.same_origin(request.headers) is False:
        error = "Cross-origin login refused."
    elif not security.token_matches(str(form.get("token", "")), token):
        error = "Wrong token."
    if error is not None or token is None:
        context = {"title": "Log in", "error": error, "next": _back_to(request, "/ui/", form)}
        return await _page(request, "login.html", context, status=403)
    response = _redirect(_back_to(request, "/ui/", form))
    response.set_cookie(
        security.SESSION_COOKIE,
        security.session_value(token),
        path="/ui/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def logout(request: web.Request) -> web.Response:
    if security.same_origin(request.headers) is False:
        raise web.HTTPForbidden(text="cross-origin request refused\n")
    response = _redirect("/ui/")
    response.del_cookie(security.SESSION_COOKIE, path="/ui/")
    return response


def _action(
    method: str,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        console = _console(request)
        form = await request.post()
        csrf = form.get(security.CSRF_FIELD)
        refusal = security.post_refusal(
            console.token,
            request.headers,
            request.cookies.get(security.SESSION_COOKIE),
            csrf if isinstance(csrf, str) else None,
        )
        as_json = _wants_json(request) or security.bearer(request.headers) is not None
        if refusal is not None:
            if as_json:
                return _json(console, {"ok": False, "message": refusal}, 403)
            return await _page(
                request, "error.html", {"title": "Refused", "message": refusal}, status=403
            )
        name = request.match_info["name"]
        try:
            result: ActionResult = await getattr(console.actions, method)(name)
        except StoreError as exc:
            result = ActionResult(False, f"the state store refused: {exc}", 503)
        message = console.scrub(result.message)
        if as_json:
            status = 200 if result.ok else result.status
            return _json(console, {"ok": result.ok, "message": message}, status)
        response = _redirect(_back_to(request, "/ui/", form))
        response.set_cookie(
            NOTICE_COOKIE,
            urllib.parse.quote(f"{'ok' if result.ok else 'error'}:{message}"[:600], safe=""),
            path="/ui/",
            httponly=True,
            samesite="Strict",
            max_age=60,
        )
        return response

    return handle
