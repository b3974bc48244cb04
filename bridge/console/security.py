"""Who may act in the console, and the headers every answer carries. Pure functions.

Reading is open to whoever reaches the port (like ``/metrics``). Acting needs ``[bridge]
http_token``: either ``Authorization: Bearer <token>``, or the session cookie the login form
sets. A POST carried by the cookie also needs the page's anti-CSRF token and a same-origin
``Origin`` (or ``Referer``) header; a bearer POST is never sent by a browser on its own, but a
cross-origin ``Origin`` is refused there too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

SESSION_COOKIE = "pollbridge_console"
CSRF_FIELD = "csrf"

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""On every answer of the HTTP port, ``/metrics`` and ``/healthz`` included."""


def _derive(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def session_value(token: str) -> str:
    """The cookie's value: derived from the token (the token itself never sits in a cookie);
    a new token ends every session."""
    return _derive(token, "pollbridge console session")


def csrf_token(token: str) -> str:
    """The anti-CSRF token of the forms: readable only by a page of the console's origin."""
    return _derive(token, "pollbridge console csrf")


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def token_matches(given: str | None, token: str) -> bool:
    """The login form's or a bearer header's token, compared in constant time."""
    return _same(given, token)


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header (any case of the scheme)."""
    value = headers.get("Authorization", "")
    scheme, _, credential = value.partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def authenticated(token: str | None, headers: Mapping[str, str], cookie: str | None) -> str | None:
    """How the request proves it holds the token: ``"bearer"``, ``"cookie"``, or None."""
    if not token:
        return None
    if token_matches(bearer(headers), token):
        return "bearer"
    if _same(cookie, session_value(token)):
        return "cookie"
    return None


def same_origin(headers: Mapping[str, str]) -> bool | None:
    """Whether ``Origin`` (else ``Referer``) names the host the request was sent to (its
    ``Host`` header); None when neither is sent. The scheme is not compared: behind a TLS
    proxy the browser's ``https://`` origin reaches us over plain HTTP."""
    origin = headers.get("Origin") or headers.get("Referer")
    if not origin:
        return None
    host = headers.get("Host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


def post_refusal(
    token: str | None,
    headers: Mapping[str, str],
    cookie: str | None,
    form_csrf: str | None,
) -> str | None:
    """Why an action POST is refused (403), or None when it may go ahead."""
    if not token:
        return "the console is read-only: set [bridge] http_token to enable actions"
    how = authenticated(token, headers, cookie)
    if how is None:
        return "log in first (the [bridge] http_token), or send Authorization: Bearer"
    origin = same_origin(headers)
    if origin is False:
        return "cross-origin request refused (Origin does not match this console)"
    if how == "cookie":
        if origin is None:
            return "no Origin or Referer header: refused"
        if not _same(form_csrf or headers.get("X-CSRF-Token"), csrf_token(token)):
            return "missing or wrong anti-CSRF token: reload the page and try again"
    return None
