"""Security promises: secrets stay secret, TLS is verified, redirects are bounded, files are 0600,
and deny_private_targets refuses private addresses at connect time."""

from __future__ import annotations

import base64
import os
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import trustme

from bridge.config import load_config
from bridge.core.signing import generate_secret
from bridge.errors import PollError
from bridge.http.connections import (
    ClientPool,
    PublicOnlyResolver,
    describe_aiohttp_error,
    new_connector,
    refused_address,
    tls_context,
)
from bridge.http.poller import Poller
from bridge.store.sqlite import SQLiteStore
from tests.support import configs
from tests.support.daemon import DaemonProcess, run_cli
from tests.support.servers import Reply, Request, TestServer, serve
from tests.support.state import StateView

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

# -- secrets ----------------------------------------------------------------------------------

API_TOKEN = "tok-SECRET-api-1234567"
API_KEY = "key-SECRET-param-98765"
HOOK_TOKEN = "hook-SECRET-header-777"
CRED_PASSWORD = "cred-SECRET-file-4242"
LISTENER_SECRET = generate_secret()


def _secrets() -> list[str]:
    return [
        API_TOKEN,
        API_KEY,
        HOOK_TOKEN,
        CRED_PASSWORD,
        LISTENER_SECRET,
        LISTENER_SECRET.removeprefix("whsec_"),
        base64.b64encode(f"user:{CRED_PASSWORD}".encode()).decode(),  # as sent in Basic auth
    ]


def _leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in _secrets() if s.encode() in data]


def _echo_api(phase: dict[str, str]) -> Any:
    def handle(req: Request) -> Reply:
        if phase["api"] == "echo-401":
            # a hostile or careless API that echoes the credentials it was sent
            echoed = f"bad credentials: {req.headers.get('authorization')} {req.path} {req.query}"
            return Reply(401, echoed, {"content-type": "text/plain"})
        if phase["api"] == "bad-json":
            return Reply(200, f"<html>{req.headers.get('authorization')}</html>")
        items = [{"id": 1, "v": phase["version"]}, {"id": 2, "v": "x"}]
        return Reply(200, {"data": items})

    return handle


def _echo_listener(phase: dict[str, str]) -> Any:
    def handle(req: Request) -> Reply:
        if phase["listener"] == "echo-400":
            echoed = f"rejected: {req.headers} {req.body[:100]!r}"
            return Reply(400, echoed, {"content-type": "text/plain"})
        return Reply(204)

    return handle


@pytest.fixture
def secret_setup(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], dict[str, str]]]:
    phase = {"api": "ok", "listener": "echo-400", "version": "1"}
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "API_PASSWORD").write_text(CRED_PASSWORD + "\n")
    env = {
        "API_TOKEN": API_TOKEN,
        "API_KEY": API_KEY,
        "HOOK_TOKEN": HOOK_TOKEN,
        "CREDENTIALS_DIRECTORY": str(creds),
    }
    with serve(_echo_api(phase)) as api, serve(_echo_listener(phase)) as hooks:
        config = configs.write_config(
            tmp_path / "pollbridge.toml",
            configs.source(
                "orders",
                f"http://user:${{API_PASSWORD}}@127.0.0.1:{api.port}/orders",
                headers={"authorization": "Bearer ${API_TOKEN}"},
                params={"api_key": "${API_KEY}"},
            ),
            configs.listener(
                "hooks",
                hooks.url("/hooks"),
                secret=LISTENER_SECRET,
                headers={"x-hook-token": "${HOOK_TOKEN}"},
                retry=["100ms"] * 6,
            ),
            shutdown_grace="2s",
            log_level="debug",
        )
        yield config, env, phase


@pytest.mark.e2e
def test_secrets_never_appear_in_output_logs_errors_or_state(secret_setup, tmp_path):
    """Every verb and the daemon, through failures that echo credentials back, never show a secret."""
    config, env, phase = secret_setup
    outputs: list[str] = []

    def cli(*args: str) -> Any:
        result = run_cli(*args, "--config", str(config), env=env)
        outputs.extend([result.stdout, result.stderr])
        return result

    assert cli("check").returncode == 0
    assert cli("poll", "orders").returncode == 0
    assert cli("poll", "orders", "--commit").returncode == 0
    phase["version"] = "2"
    assert cli("run", "--once").returncode == 75  # the listener rejects; delivery pending
    phase["api"] = "echo-401"
    failed = cli("poll", "orders", "--commit")
    assert failed.returncode == 1 and "HTTP 401" in failed.stderr
    assert cli("run", "--once").returncode == 1
    phase["api"] = "bad-json"
    assert cli("run", "--once").returncode == 1

    with DaemonProcess(config, env=env) as daemon:
        phase["api"], phase["version"] = "echo-401", "3"
        import time

        time.sleep(1.0)
        phase["api"] = "ok"
        time.sleep(1.0)
        phase["listener"] = "ok"
        time.sleep(1.5)
        assert daemon.terminate() == 0
        outputs.append(daemon.output())

    # the inspection verbs, over a state full of attempts that echoed credentials back
    for verb in ("status", "events", "deliveries"):
        for json_flag in ((), ("--json",)):
            assert cli(verb, *json_flag).returncode == 0, outputs[-1]
    event_ids = [e.id for e in StateView(tmp_path / "state.db").event_list()]
    assert event_ids
    for event_id in event_ids:
        assert cli("show", event_id).returncode == 0, outputs[-1]
        assert cli("show", event_id, "--json").returncode == 0, outputs[-1]

    # a configuration error that would quote a secret value
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace('every = "200ms"', 'every = "${API_TOKEN}"'))
    result = run_cli("check", "--config", str(bad), env=env)
    outputs.extend([result.stdout, result.stderr])
    assert result.returncode == 78 and "invalid duration" in result.stderr

    text = "\n".join(outputs)
    assert "HTTP 400" in text and "HTTP 401" in text  # the echoing failures did happen
    assert "***" in text  # ...and were redacted
    assert _leaks(text) == [], text
    for path in tmp_path.glob("state.db*"):
        assert _leaks(path.read_bytes()) == [], path
    view = StateView(tmp_path / "state.db")
    rows: list[tuple[Any, ...]] = [(s.last_error,) for s in view.sources().values()]
    rows += [(a.error, a.response) for a in view.attempts()]
    assert any(r[0] for r in rows)
    assert _leaks(repr(rows)) == []


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https_server(ca: trustme.CA) -> Iterator[TestServer]:
    """A TestServer speaking HTTPS with a certificate from a private (untrusted) CA."""
    server = TestServer(lambda _r: Reply(200, {"data": [{"id": 1}]}))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    server.server.socket = ctx.wrap_socket(server.server.socket, server_side=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _https(server: TestServer, path: str = "/") -> str:
    return f"https://127.0.0.1:{server.port}{path}"


def _tls_config(
    tmp_path: Path, api: str, hook: str, source_tls: str, listener_tls: str, **bridge_fields: Any
) -> Path:
    return configs.write_config(
        tmp_path / "pollbridge.toml",
        configs.source("orders", api, every="1m", baseline="emit", raw=source_tls),
        configs.listener("hooks", hook, retry=["1h"], raw=listener_tls),
        shutdown_grace=None,
        **bridge_fields,
    )


@pytest.mark.e2e
def test_tls_is_verified_by_default_for_polls_and_deliveries(tmp_path, https_server):
    """A self-signed API or listener is refused: the poll fails, the delivery never happens."""
    with serve() as plain_hooks:
        config = _tls_config(tmp_path, _https(https_server, "/orders"), plain_hooks.url(), "", "")
        result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert plain_hooks.requests == []

    # the delivery side: a trusted API, a self-signed listener
    with serve(lambda _r: Reply(200, {"data": [{"id": 1}]})) as api:
        (tmp_path / "state.db").unlink(missing_ok=True)
        config = _tls_config(tmp_path, api.url(), _https(https_server, "/hooks"), "", "")
        result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 75
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert [r.method for r in https_server.requests] == []


@pytest.mark.e2e
def test_ca_file_trusts_a_private_ca_for_polls_and_deliveries(tmp_path, ca, https_server):
    """With the endpoint's ca_file, the same self-signed endpoints are polled and delivered to."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = f'ca_file = "{ca_file}"'
    config = _tls_config(
        tmp_path, _https(https_server, "/orders"), _https(https_server, "/hooks"), tls, tls
    )
    result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert [r.method for r in https_server.requests] == ["GET", "POST"]


@pytest.mark.e2e
def test_tls_verify_false_works_and_warns_at_every_start(tmp_path, https_server):
    """tls_verify = false is per endpoint and logs a warning naming it at every start."""
    tls = "tls_verify = false"
    config = _tls_config(
        tmp_path, _https(https_server, "/orders"), _https(https_server, "/hooks"), tls, tls
    )
    for _ in range(2):
        result = run_cli("run", "--once", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert "source orders: tls_verify = false" in result.stderr
        assert "listener hooks: tls_verify = false" in result.stderr


def test_ca_file_and_tls_verify_are_validated(tmp_path, write_config, ca):
    """A missing, relative or non-PEM ca_file, or ca_file with tls_verify = false, is refused."""
    from bridge.errors import ConfigError

    good = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(good))
    (tmp_path / "junk.pem").write_text("not a certificate")
    base = '[[sources]]\nname = "a"\nurl = "https://h/"\nevery = "1m"\n'
    for extra, message in [
        ('ca_file = "/nonexistent/ca.pem"', "does not exist"),
        ('ca_file = "ca.pem"', "must be an absolute path"),
        (f'ca_file = "{tmp_path}/junk.pem"', "not a readable PEM CA bundle"),
        (f'ca_file = "{tmp_path}"', "not a readable PEM CA bundle"),
        (f'ca_file = "{good}"\ntls_verify = false', "not both"),
    ]:
        path = write_config(base + extra + "\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path, env={})
    assert load_config(write_config(base), env={}).sources[0].tls_verify is True


# -- redirects --------------------------------------------------------------------------------


async def test_poll_follows_at_most_five_redirects():
    """Five redirects are followed; the sixth is a poll failure."""

    def chain(n: int) -> Any:
        def handle(req: Request) -> Reply:
            hop = int(req.path.strip("/") or 0)
            if hop < n:
                return Reply(302, b"", {"location": f"/{hop + 1}"})
            return Reply(200, {"data": []})

        return handle

    async with httpx.AsyncClient() as client:
        poller = Poller(client)
        with serve(chain(5)) as server:
            fetched = await poller.fetch(
                "s", server.url("/0"), timeout_s=5, max_bytes=1000, now=NOW
            )
            assert fetched.status == 200 and fetched.url.endswith("/5")
        with serve(chain(6)) as server, pytest.raises(PollError, match="more than 5 redirects"):
            await poller.fetch("s", server.url("/0"), timeout_s=5, max_bytes=1000, now=NOW)


async def test_poll_never_follows_https_to_http(https_server, ca):
    """A redirect from https to http is refused (a downgrade), not followed."""
    with serve(lambda _r: Reply(200, {"data": []})) as plain:
        https_server.handler = lambda _r: Reply(302, b"", {"location": plain.url("/x")})
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        async with httpx.AsyncClient(verify=ctx) as client:
            with pytest.raises(PollError, match="refused a redirect from https to http"):
                await Poller(client).fetch(
                    "s", _https(https_server), timeout_s=5, max_bytes=1000, now=NOW
                )
        assert plain.requests == []


@pytest.mark.e2e
def test_deliveries_never_follow_redirects(tmp_path):
    """A listener's 3xx is a failed attempt; the redirect target receives nothing."""
    with (
        serve() as elsewhere,
        serve(lambda _r: Reply(307, b"", {"location": elsewhere.url("/x")})) as hooks,
        serve(lambda _r: Reply(200, {"data": [{"id": 1}]})) as api,
    ):
        config = _tls_config(tmp_path, api.url(), hooks.url("/hooks"), "", "")
        result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 75
    assert "redirects are not followed" in result.stderr
    assert len(hooks.requests) == 1 and elsewhere.requests == []


# -- file modes -------------------------------------------------------------------------------


async def test_state_file_and_wal_are_0600_whatever_the_umask(tmp_path):
    """The state file, its WAL and shared-memory files are created owner-only (0600)."""
    old = os.umask(0)
    try:
        store = SQLiteStore(tmp_path / "sub" / "state.db")
        await store.open()
        try:
            await store.set_listener_paused("x", True, "test", NOW)
            files = sorted(tmp_path.glob("sub/state.db*"))
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
        finally:
            await store.close()
    finally:
        os.umask(old)
    assert set(modes) == {"state.db", "state.db-wal", "state.db-shm"}
    assert set(modes.values()) == {0o600}, {k: oct(v) for k, v in modes.items()}


# -- deny_private_targets -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a link-local address"),  # cloud metadata
        ("100.64.0.1", "a shared (CGNAT) address"),
        ("0.0.0.0", "an unspecified address"),  # noqa: S104
        ("224.0.0.1", "a multicast address"),
        ("::1", "a loopback address"),
        ("fe80::1", "a link-local address"),
        ("fd00::1", "a private address"),
        ("::ffff:127.0.0.1", "an IPv4-mapped IPv6 address"),
        ("::ffff:8.8.8.8", "an IPv4-mapped IPv6 address"),
        ("64:ff9b::7f00:1", "an IPv6 address embedding a non-public IPv4 address"),
        ("2002:7f00:1::1", "an IPv6 address embedding a non-public IPv4 address"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_refused_addresses(address, refused):
    """Loopback, private, link-local, CGNAT and IPv4-mapped addresses are refused; public ones not."""
    import ipaddress

    assert refused_address(ipaddress.ip_address(address)) == refused


class _RecordingSockets:
    """A socket factory that records the address it is asked for and then fails (no network)."""

    def __init__(self) -> None:
        self.connected: list[str] = []

    def __call__(self, addr_info: Any) -> Any:
        self.connected.append(addr_info[4][0])
        raise OSError("test: nothing is dialled")


async def test_guard_connects_to_the_checked_address_so_rebinding_cannot_bypass_it():
    """Each connect resolves once, checks, and dials the checked IP: a rebound name is refused."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def resolve(host: str, port: int, family: Any) -> list[Any]:
        return [
            {"hostname": host, "host": a, "port": port, "family": 2, "proto": 0, "flags": 0}
            for a in next(answers)
        ]

    inner = _RecordingSockets()
    connector = new_connector(
        tls_context(None, True),
        httpx.Limits(),
        deny_private_targets=True,
        resolver=PublicOnlyResolver(resolve),
        socket_factory=inner,
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get("http://rebind.example/")
        assert inner.connected == ["93.184.216.34"]  # the literal address, never the name again
        connector.clear_dns_cache()
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await session.get("http://rebind.example/")
    assert "127.0.0.1 is a loopback address" in describe_aiohttp_error(refused.value)
    assert inner.connected == ["93.184.216.34"]


async def test_guard_checks_the_address_of_every_socket_even_a_literal():
    """An address literal never reaches a resolver; the socket factory refuses it itself."""
    inner = _RecordingSockets()
    connector = new_connector(
        tls_context(None, True), httpx.Limits(), deny_private_targets=True, socket_factory=inner
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await session.get("http://[::1]:9/")
    assert describe_aiohttp_error(refused.value) == (
        "connection failed: refused to connect to ::1: ::1 is a loopback address "
        "([bridge] deny_private_targets = true)"
    )
    assert inner.connected == []


@pytest.mark.e2e
def test_deny_private_targets_refuses_loopback_listeners(tmp_path):
    """With deny_private_targets, a listener on 127.0.0.1 or localhost never gets a connection."""
    with serve() as hooks, serve(lambda _r: Reply(200, {"data": [{"id": 1}]})) as api:
        for host in ("127.0.0.1", "localhost"):
            (tmp_path / "state.db").unlink(missing_ok=True)
            hook = f"http://{host}:{hooks.port}/hooks"
            config = _tls_config(tmp_path, api.url(), hook, "", "", deny_private_targets=True)
            result = run_cli("run", "--once", "--config", str(config))
            assert result.returncode == 75, result.stderr
            assert f"refused to connect to {host}" in result.stderr
            assert "is a loopback address" in result.stderr
        assert hooks.requests == []
        # polls are not affected: the API on 127.0.0.1 was polled
        assert len(api.requests) == 2


async def test_client_pool_builds_guarded_clients_only_when_asked():
    """deny_private_targets applies to the listener pool only; the default pool connects anywhere."""
    with serve() as hooks:
        guarded = ClientPool(httpx.Limits(), deny_private_targets=True)
        open_pool = ClientPool(httpx.Limits())
        try:
            with pytest.raises(httpx.ConnectError, match="deny_private_targets"):
                await guarded.get().post(hooks.url())
            assert (await open_pool.get().post(hooks.url())).status_code == 204
        finally:
            await guarded.aclose()
            await open_pool.aclose()
    assert len(hooks.requests) == 1


async def test_oauth2_access_tokens_echoed_back_are_redacted(tmp_path):
    """A token fetched at run time and echoed by the API is kept out of the error and the state."""
    from tests.support.pipelines import make_config, running

    issued: list[str] = []

    def handle(req: Request) -> Reply:
        if req.path == "/oauth/token":
            issued.append(f"atok-SECRET-{len(issued)}-abcdef")
            return Reply(200, {"access_token": issued[-1], "expires_in": 3600})
        return Reply(401, f"invalid token: {req.headers.get('authorization')}")

    with serve(handle) as server:
        auth = configs.oauth2(server.url("/oauth/token"), "id", "client-SECRET-xyz")
        oauth_source = configs.source("s", server.url("/items"), every="1m", items=None, auth=auth)
        async with running(make_config(tmp_path, oauth_source)) as h:
            failed = await h.poll()
            state = await h.store.get_source_state("s")
            stored = state.last_error if state else None
    assert not failed.ok and "HTTP 401" in (failed.error or "")
    assert "invalid token: Bearer ***" in (failed.error or "")
    assert issued and not any(t in (failed.error or "") or t in stored for t in issued)
