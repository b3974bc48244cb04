"""bridge/console/security.py: who may act, CSRF and Origin checks, the exposure warning."""

from __future__ import annotations

import pytest

from bridge.config.risks import exposure_warning
from bridge.console.security import (
    SECURITY_HEADERS,
    authenticated,
    csrf_token,
    post_refusal,
    same_origin,
    session_value,
)

TOKEN = "t0ken-for-the-console"
HOST = {"Host": "127.0.0.1:9464"}


def test_bearer_and_cookie_authenticate_nothing_else_does():
    """The bearer token or the session cookie; the raw token is never the cookie's value."""
    assert authenticated(TOKEN, {"Authorization": f"Bearer {TOKEN}"}, None) == "bearer"
    assert authenticated(TOKEN, {"Authorization": f"bearer {TOKEN}"}, None) == "bearer"
    assert authenticated(TOKEN, {}, session_value(TOKEN)) == "cookie"
    assert authenticated(TOKEN, {}, TOKEN) is None
    assert authenticated(TOKEN, {"Authorization": "Bearer nope"}, "nope") is None
    assert authenticated(None, {"Authorization": f"Bearer {TOKEN}"}, None) is None
    assert session_value(TOKEN) != session_value(TOKEN + "x")
    assert TOKEN not in session_value(TOKEN) and csrf_token(TOKEN) != session_value(TOKEN)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Origin": "http://127.0.0.1:9464"}, True),
        ({"Origin": "https://127.0.0.1:9464"}, True),  # behind a TLS proxy
        ({"Origin": "http://evil.example"}, False),
        ({"Origin": "null"}, False),
        ({"Referer": "http://127.0.0.1:9464/ui/events"}, True),
        ({"Referer": "http://127.0.0.1:9465/ui/"}, False),
        ({}, None),
    ],
)
def test_same_origin(headers, expected):
    """Origin (else Referer) must name the host the request went to."""
    assert same_origin({**HOST, **headers}) is expected


def _refusal(headers, cookie=None, csrf=None, token=TOKEN):
    return post_refusal(token, {**HOST, **headers}, cookie, csrf)


def test_what_a_post_needs():
    """No token configured: refused; no credentials: refused; a cookie POST needs the CSRF
    token and a same-origin Origin; a bearer POST needs no CSRF token but no foreign Origin."""
    origin = {"Origin": "http://127.0.0.1:9464"}
    cookie = session_value(TOKEN)
    good = csrf_token(TOKEN)
    assert "read-only" in _refusal(origin, cookie, good, token=None)
    assert "log in" in _refusal(origin, None, good)
    assert _refusal(origin, cookie, good) is None
    assert _refusal({**origin, "X-CSRF-Token": good}, cookie) is None
    assert "anti-CSRF" in _refusal(origin, cookie, None)
    assert "anti-CSRF" in _refusal(origin, cookie, csrf_token("other"))
    assert "Origin" in _refusal({}, cookie, good)
    assert "cross-origin" in _refusal({"Origin": "http://evil.example"}, cookie, good)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert _refusal(bearer) is None
    assert "cross-origin" in _refusal({**bearer, "Origin": "http://evil.example"})


@pytest.mark.parametrize(
    ("address", "token", "warns"),
    [
        (None, None, False),
        (("127.0.0.1", 9464), None, False),
        (("::1", 9464), None, False),
        (("localhost", 9464), None, False),
        (("0.0.0.0", 9464), None, True),  # noqa: S104
        (("192.168.1.5", 9464), None, True),
        (("192.168.1.5", 9464), TOKEN, False),
    ],
)
def test_exposure_warning(address, token, warns):
    """A non-loopback address without http_token warns, naming the setting."""
    warning = exposure_warning(address, token)
    assert (warning is not None) is warns
    if warning:
        assert "http_token" in warning and address[0] in warning


def test_the_headers_forbid_framing_sniffing_and_foreign_scripts():
    """The CSP allows only our own scripts and styles and no framing."""
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
