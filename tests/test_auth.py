"""Source authentication: static credentials and OAuth2 client-credentials tokens."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from bridge.config import OAuth2Auth
from bridge.errors import PollError
from bridge.http.auth import Authenticators, OAuth2ClientCredentials
from bridge.http.poller import Poller
from tests.support.configs import oauth2, source
from tests.support.fake_apis import CLIENT_ID, CLIENT_SECRET, FakeAPI
from tests.support.pipelines import make_config, running
from tests.support.servers import Reply, serve

NOW = datetime(2024, 5, 1, tzinfo=UTC)
API = "https://api.example.com/v1/items"
TOKEN_URL = "https://auth.example.com/oauth/token"
QUERY_KEY = {"kind": "query", "name": "api_key", "value": "qsecret-42"}


def _config(tmp_path, auth: dict[str, str], **fields: Any):  # type: ignore[no-untyped-def]
    """Source ``s`` at :data:`API` with ``auth``; ``fields``: its further keys."""
    return make_config(tmp_path, source("s", API, every="1m", items=None, auth=auth, **fields))


async def _fetch(config, client: httpx.AsyncClient, auths: Authenticators | None = None):
    source = config.sources[0]
    auths = auths or Authenticators(client)
    return await Poller(client).fetch(
        "s",
        source.url,
        timeout_s=5,
        max_bytes=1000,
        now=NOW,
        auth=auths.for_source(source),
    )


@pytest.mark.parametrize(
    ("auth", "header", "expected"),
    [
        ({"kind": "bearer", "token": "tok-123456"}, "authorization", "Bearer tok-123456"),
        (
            {"kind": "basic", "username": "ann", "password": "pw-secret"},
            "authorization",
            "Basic " + base64.b64encode(b"ann:pw-secret").decode(),
        ),
        (
            {"kind": "header", "name": "X-Api-Key", "value": "key-987654"},
            "x-api-key",
            "key-987654",
        ),
        (
            {"kind": "basic", "username": "sk_test_only"},
            "authorization",
            "Basic " + base64.b64encode(b"sk_test_only:").decode(),
        ),
    ],
    ids=["bearer", "basic", "header", "basic without a password"],
)
async def test_header_credentials_are_sent(tmp_path, auth, header, expected):
    """bearer, basic and header auth put their secret in the right header."""
    config = _config(tmp_path, auth)
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(API).respond(200, json=[])
        async with httpx.AsyncClient() as client:
            await _fetch(config, client)
    assert route.calls.last.request.headers[header] == expected


async def test_query_credentials_never_appear_in_urls_or_errors(tmp_path):
    """query auth adds the parameter on the wire but not in the URL pollbridge reports."""
    config = _config(tmp_path, QUERY_KEY)
    with respx.mock() as mock:
        route = mock.get(API).respond(500, text="nope")
        async with httpx.AsyncClient() as client:
            with pytest.raises(PollError) as caught:
                await _fetch(config, client)
    assert route.calls.last.request.url.params["api_key"] == "qsecret-42"
    assert "qsecret-42" not in str(caught.value)
    assert caught.value.url == API


async def test_credentials_are_not_sent_across_origins_on_redirect(tmp_path):
    """A redirect to another host gets no Authorization header."""
    config = _config(tmp_path, {"kind": "bearer", "token": "tok-123456"})
    with respx.mock() as mock:
        mock.get(API).respond(302, headers={"location": "https://cdn.example.net/items.json"})
        other = mock.get("https://cdn.example.net/items.json").respond(200, json=[])
        async with httpx.AsyncClient() as client:
            await _fetch(config, client)
    assert "authorization" not in other.calls.last.request.headers


def _oauth(**extra) -> OAuth2Auth:
    return OAuth2Auth(
        kind="oauth2",
        token_url=TOKEN_URL,
        client_id="id one",
        client_secret="sec/ret",
        **extra,
    )


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_oauth2_token_is_cached_until_shortly_before_expiry():
    """A token with expires_in = 100 is reused for 90 s (10% margin), then fetched again."""
    clock = Clock()
    with respx.mock() as mock:
        token = mock.post(TOKEN_URL).respond(
            200, json={"access_token": "t1", "token_type": "bearer", "expires_in": 100}
        )
        async with httpx.AsyncClient() as client:
            auth = OAuth2ClientCredentials(
                _oauth(scope="read", audience="api"), client, clock=clock
            )
            assert await auth.token("s", 5) == "t1"
            clock.t += 89
            assert await auth.token("s", 5) == "t1"
            assert token.call_count == 1
            clock.t += 2
            await auth.token("s", 5)
            assert token.call_count == 2
    request = token.calls.last.request
    form = dict(httpx.QueryParams(request.content.decode()))
    assert form == {"grant_type": "client_credentials", "scope": "read", "audience": "api"}
    # RFC 6749 §2.3.1: form-encoded, then Basic
    assert (
        request.headers["authorization"]
        == "Basic " + base64.b64encode(b"id%20one:sec%2Fret").decode()
    )


async def test_oauth2_client_secret_in_body_and_long_lived_tokens():
    """client_auth = "body" sends the credentials as form fields; no expires_in caches until 401."""
    clock = Clock()
    with respx.mock() as mock:
        token = mock.post(TOKEN_URL).respond(200, json={"access_token": "t1"})
        async with httpx.AsyncClient() as client:
            auth = OAuth2ClientCredentials(_oauth(client_auth="body"), client, clock=clock)
            await auth.token("s", 5)
            clock.t += 10**6
            await auth.token("s", 5)
    assert token.call_count == 1
    form = dict(httpx.QueryParams(token.calls.last.request.content.decode()))
    assert form["client_id"] == "id one" and form["client_secret"] == "sec/ret"
    assert "authorization" not in token.calls.last.request.headers


async def test_oauth2_token_errors_name_the_endpoint_not_the_secret():
    """A refused token request fails the poll with the RFC 6749 error, never the secret."""
    with respx.mock() as mock:
        mock.post(TOKEN_URL).respond(
            401, json={"error": "invalid_client", "error_description": "unknown client"}
        )
        async with httpx.AsyncClient() as client:
            auth = OAuth2ClientCredentials(_oauth(), client)
            with pytest.raises(PollError) as caught:
                await auth.token("s", 5)
    message = str(caught.value)
    assert TOKEN_URL in message and "invalid_client (unknown client)" in message
    assert "sec/ret" not in message


@pytest.mark.parametrize("answer", [{"token_type": "bearer"}, {"access_token": ""}, "not json"])
async def test_oauth2_answers_without_a_token_fail(answer):
    """An answer without a usable access_token is a poll failure."""
    with respx.mock() as mock:
        if isinstance(answer, str):
            mock.post(TOKEN_URL).respond(200, text=answer)
        else:
            mock.post(TOKEN_URL).respond(200, json=answer)
        async with httpx.AsyncClient() as client:
            with pytest.raises(PollError, match=r"access_token|not JSON"):
                await OAuth2ClientCredentials(_oauth(), client).token("s", 5)


async def test_sources_with_the_same_client_share_one_token(tmp_path):
    """Two sources with identical OAuth2 settings get the same authenticator (one token)."""
    auth = oauth2(TOKEN_URL, "a", "secret-1")
    config = make_config(
        tmp_path, *(source(n, API, every="1m", items=None, auth=auth) for n in ("one", "two"))
    )
    async with httpx.AsyncClient() as client:
        auths = Authenticators(client)
        one, two = (auths.for_source(s) for s in config.sources)
    assert one is two and isinstance(one, OAuth2ClientCredentials)


async def test_oauth2_against_a_server_with_expiring_tokens(tmp_path):
    """Tokens are fetched once, reused, fetched again once after a 401, and polls succeed."""
    fake = FakeAPI(count=5)
    fake.require_token = True
    with serve(fake) as server:
        auth = oauth2(server.url("/oauth/token"), CLIENT_ID, CLIENT_SECRET)
        config = make_config(tmp_path, source("s", server.url("/items"), every="1m", auth=auth))
        async with running(config) as h:
            assert (await h.poll()).ok
            assert (await h.poll()).ok
            assert fake.token_requests == 1
            fake.revoke_tokens()
            renewed = await h.poll()
            assert renewed.ok, renewed.error
            assert (fake.token_requests, fake.rejected) == (2, 1)

            def always_401(req):
                return fake(req) if req.path == "/oauth/token" else Reply(401, b"")

            server.handler = always_401
            failed = await h.poll()
    assert not failed.ok and "HTTP 401" in (failed.error or "")
    assert fake.token_requests == 3  # one renewal per poll, never a loop


async def test_query_key_echoed_in_next_links_is_never_stored(tmp_path):
    """An API that puts the query key into its Link header: pages work, state holds no secret."""
    config = _config(tmp_path, QUERY_KEY, paginate={"kind": "link"})
    with respx.mock() as mock:
        page2 = f"{API}?page=2&api_key=qsecret-42"
        mock.get(API, params={"page": "2"}).respond(200, json=[{"id": 2}], headers={"etag": '"b"'})
        mock.get(API).respond(
            200, json=[{"id": 1}], headers={"etag": '"a"', "link": f'<{page2}>; rel="next"'}
        )
        async with running(config) as h:
            outcome = await h.poll()
            state = await h.store.get_source_state("s")
        calls = [c.request.url for c in mock.calls]
    assert outcome.item_count == 2, outcome.error
    assert [u.params["api_key"] for u in calls] == ["qsecret-42", "qsecret-42"]
    assert state is not None and "qsecret-42" not in repr(state.validators)
    assert f"{API}?page=2" in state.validators
