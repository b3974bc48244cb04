"""A redirect to another origin carries none of a source's credentials, however they are given."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import source, write_config
from tests.support.daemon import run_cli

SECRET = "s3cr3t-value-0042"
BASIC = base64.b64encode(f"user:{SECRET}".encode()).decode()


class _Recorder:
    """An HTTP server on ``host`` that records each request line and its headers."""

    def __init__(self, host: str, location: str | None = None) -> None:
        self.seen: list[str] = []
        self.location = location
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.seen.append(f"{self.requestline}\n{self.headers}")
                if outer.location is not None:
                    self.send_response(302)
                    self.send_header("location", outer.location)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = b"[]"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), _H)
        self.server.daemon_threads = True
        self.host = host

    def url(self, path: str = "/items") -> str:
        return f"http://{self.host}:{self.server.server_address[1]}{path}"

    def __enter__(self) -> _Recorder:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def _redirecting(target_host: str) -> Iterator[tuple[_Recorder, _Recorder]]:
    with _Recorder(target_host) as target, _Recorder("127.0.0.1") as api:
        api.location = target.url("/elsewhere")
        yield api, target


WAYS = {
    "auth bearer": ("", 'auth = { kind = "bearer", token = "SECRET" }'),
    "auth basic": ("", 'auth = { kind = "basic", username = "user", password = "SECRET" }'),
    "auth header": ("", 'auth = { kind = "header", name = "X-Api-Key", value = "SECRET" }'),
    "auth query": ("", 'auth = { kind = "query", name = "api_key", value = "SECRET" }'),
    "headers Authorization": ("", 'headers = { Authorization = "Bearer SECRET" }'),
    "headers X-Api-Key": ("", 'headers = { X-Api-Key = "SECRET" }'),
    "headers Cookie": ("", 'headers = { Cookie = "session=SECRET" }'),
    "params": ("", 'params = { api_key = "SECRET" }'),
    "url userinfo": ("user:SECRET@", ""),
}


def _config(tmp_path: Path, api_url: str, userinfo: str, line: str) -> Path:
    url = api_url.replace("http://", f"http://{userinfo.replace('SECRET', SECRET)}")
    return write_config(
        tmp_path / "pollbridge.toml",
        source("s", url, every="1m", items="$[*]", raw=line.replace("SECRET", SECRET)),
        shutdown_grace=None,
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    "target_host", ["127.0.0.1", "127.0.0.2"], ids=["other port", "other host"]
)
@pytest.mark.parametrize("way", list(WAYS))
def test_a_redirect_to_another_origin_gets_no_credential(tmp_path, way, target_host):
    """However a credential is configured, the other origin of a redirect never sees it."""
    userinfo, line = WAYS[way]
    with _redirecting(target_host) as (api, target):
        config = _config(tmp_path, api.url(), userinfo, line)
        result = run_cli("poll", "s", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert len(api.seen) == 1 and len(target.seen) == 1
    # the source's own origin got the credential (the test would prove nothing otherwise)
    assert SECRET in api.seen[0] or BASIC in api.seen[0]
    assert SECRET not in target.seen[0]
    assert BASIC not in target.seen[0]
    assert "authorization" not in target.seen[0].lower()
    assert "cookie" not in target.seen[0].lower()


@pytest.mark.e2e
def test_redirect_headers_names_the_headers_that_may_follow(tmp_path):
    """``redirect_headers`` lets a named header follow a redirect; the others still do not."""
    line = 'headers = { X-Trace = "t-1", X-Api-Key = "SECRET" }\nredirect_headers = ["x-trace"]'
    with _redirecting("127.0.0.2") as (api, target):
        result = run_cli("poll", "s", "--config", str(_config(tmp_path, api.url(), "", line)))
    assert result.returncode == 0, result.stderr
    assert "x-trace: t-1" in target.seen[0].lower()
    assert SECRET not in target.seen[0]
    assert "user-agent: pollbridge/" in target.seen[0].lower()


@pytest.mark.e2e
def test_a_sources_user_agent_replaces_pollbridges_once(tmp_path):
    """Header names are case-insensitive: ``User-Agent`` in ``headers`` is sent once, as given."""
    with _Recorder("127.0.0.1") as api:
        line = 'headers = { User-Agent = "mine/1.0" }'
        result = run_cli("poll", "s", "--config", str(_config(tmp_path, api.url(), "", line)))
    assert result.returncode == 0, result.stderr
    agents = [h for h in api.seen[0].lower().splitlines() if h.startswith("user-agent:")]
    assert agents == ["user-agent: mine/1.0"]
