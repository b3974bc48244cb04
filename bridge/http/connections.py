"""The one connection stack polls and deliveries go through: aiohttp's pool, on its public API.

- Every connection is made by an ``aiohttp.TCPConnector`` (one per TLS setting, in a
  :class:`ClientPool`). Deliveries use its ``ClientSession`` directly; polls speak httpx's API
  (``client.send``, ``httpx.Auth``, respx in tests) through :class:`AiohttpTransport`, a
  ``httpx.AsyncBaseTransport`` over the same session. httpcore's own pool does work for every
  pooled connection on each request (~1.7 ms of CPU per webhook against ~0.3 ms; 41% of a core
  for 1,000 sources every 10 s against 14%: docs/benchmarks.md).
- TLS certificates are verified by default; an endpoint may name its own CA (``ca_file``) or,
  explicitly and loudly, turn verification off (``tls_verify = false``, warned at every start).
- ``[bridge] deny_private_targets = true`` refuses listener connections to loopback, private,
  link-local, shared (CGNAT) and IPv4-mapped addresses. The connector's resolver drops such
  addresses from every DNS answer, and its socket factory checks the very address each socket
  is made for (an address literal never reaches a resolver): the socket connects to the address
  that passed, so a name that resolves differently a second later (DNS rebinding) cannot slip
  through.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

log = logging.getLogger("pollbridge.transport")

DENY_PRIVATE_NOTE = "([bridge] deny_private_targets = true)"
_CHUNK_BYTES = 64 * 1024


def tls_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """The TLS context of an endpoint: the certifi store, a given CA, or no verification."""
    if not verify:
        return httpx.create_ssl_context(verify=False)
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return httpx.create_ssl_context(verify=True)


def refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` is not a public unicast address (for deny_private_targets), or None if it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        embedded = ip.sixtofour
        if embedded is None and ip in ipaddress.IPv6Network("64:ff9b::/96"):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and refused_address(embedded):
            return "an IPv6 address embedding a non-public IPv4 address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.IPv4Network("100.64.0.0/10"):
        return "a shared (CGNAT) address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a reserved address"
    return None


class RefusedTarget(OSError):
    """A connection deny_private_targets refused; the message names the host and the address."""


def _why_refused(address: str) -> str | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    return refused_address(ip)


Resolve = Callable[[str, int, socket.AddressFamily], Awaitable[list[ResolveResult]]]


class PublicOnlyResolver(AbstractResolver):
    """Resolves with ``resolve`` (aiohttp's default resolver) and keeps public addresses only."""

    def __init__(self, resolve: Resolve | None = None) -> None:
        self._default: AbstractResolver | None = None
        self._resolve = resolve

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._resolve is not None:
            answers = await self._resolve(host, port, family)
        else:
            if self._default is None:
                self._default = aiohttp.DefaultResolver()
            answers = await self._default.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for answer in answers:
            why = _why_refused(answer["host"])
            if why is None:
                allowed.append(answer)
            else:
                refused.append(f"{answer['host']} is {why}")
        if not allowed:
            raise RefusedTarget(
                f"refused to connect to {host}: {'; '.join(dict.fromkeys(refused))} "
                + DENY_PRIVATE_NOTE
            )
        return allowed

    async def close(self) -> None:
        if self._default is not None:
            await self._default.close()


AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
SocketFactory = Callable[[AddrInfo], socket.socket]


def _plain_socket(addr_info: AddrInfo) -> socket.socket:
    family, type_, proto, _name, _address = addr_info
    return socket.socket(family=family, type=type_, proto=proto)


def public_only_sockets(inner: SocketFactory = _plain_socket) -> SocketFactory:
    """A connector's socket factory that makes sockets for public addresses only."""

    def make(addr_info: AddrInfo) -> socket.socket:
        address = str(addr_info[4][0])
        why = _why_refused(address)
        if why is not None:
            raise RefusedTarget(
                f"refused to connect to {address}: {address} is {why} {DENY_PRIVATE_NOTE}"
            )
        return inner(addr_info)

    return make


def new_connector(
    tls: ssl.SSLContext,
    limits: httpx.Limits,
    *,
    deny_private_targets: bool = False,
    resolver: AbstractResolver | None = None,
    socket_factory: SocketFactory | None = None,
) -> aiohttp.TCPConnector:
    """The connector of one TLS setting; guarded when ``deny_private_targets``."""
    options: dict[str, Any] = {
        "ssl": tls,
        "limit": limits.max_connections or 0,
        "keepalive_timeout": limits.keepalive_expiry,
    }
    if deny_private_targets:
        options["resolver"] = resolver or PublicOnlyResolver()
        options["socket_factory"] = public_only_sockets(socket_factory or _plain_socket)
    elif resolver is not None:
        options["resolver"] = resolver
    return aiohttp.TCPConnector(**options)


class EnvironmentProxies:
    """``HTTP_PROXY``/``HTTPS_PROXY`` and ``NO_PROXY``, read once, as httpx reads them.

    aiohttp's ``trust_env`` reads the environment, and ``~/.netrc``, again for every request:
    ~0.35 ms of CPU each, more than the rest of a send (benchmarks/bench_delivery.py).
    """

    def __init__(self, proxies: Mapping[str, str] | None = None) -> None:
        found = urllib.request.getproxies() if proxies is None else dict(proxies)
        self._by_scheme = {k: v for k, v in found.items() if k in ("http", "https") and v}
        self._no_proxy = [
            h.strip().lower().lstrip(".") for h in found.get("no", "").split(",") if h.strip()
        ]
        self._chosen: dict[tuple[str, str], str | None] = {}

    @classmethod
    def none(cls) -> EnvironmentProxies:
        """No proxy at all (deny_private_targets: every connection goes to a checked address)."""
        return cls({})

    def for_url(self, url: URL) -> str | None:
        """The proxy URL for ``url``, or None to connect directly."""
        key = (url.scheme, (url.host or "").lower())
        if key not in self._chosen:
            scheme, host = key
            bypass = any(n == "*" or host == n or host.endswith("." + n) for n in self._no_proxy)
            self._chosen[key] = None if bypass else self._by_scheme.get(scheme)
        return self._chosen[key]


AIOHTTP_ERRORS = (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError)


def _as_httpx_error(exc: BaseException) -> httpx.TransportError:
    detail = describe_aiohttp_error(exc)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(detail)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(detail)
    if isinstance(exc, aiohttp.http_exceptions.HttpProcessingError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(detail)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return httpx.ReadError(detail)
    return httpx.TransportError(detail)


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as an httpx stream; its errors surface as httpx errors."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK_BYTES):
                yield chunk
        except AIOHTTP_ERRORS as exc:
            raise _as_httpx_error(exc) from exc

    async def aclose(self) -> None:
        self._response.release()  # an unread body closes its connection instead of pooling it


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over an aiohttp session, for the httpx API of polls.

    The request goes out as httpx built it (headers, and the URL byte for byte); credentials in
    a URL travel only as the Authorization header httpx made of them. Bodies are not decoded
    here: httpx's response (or the poller's bounded decoder) does that.
    """

    def __init__(
        self, session: aiohttp.ClientSession, proxies: EnvironmentProxies | None = None
    ) -> None:
        self.session = session
        self.proxies = proxies or EnvironmentProxies.none()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.userinfo:
            url = url.copy_with(username=None, password=None)
        body = await request.aread()
        timeout = request.extensions.get("timeout", {})
        target = URL(str(url), encoded=True)
        try:
            response = await self.session.request(
                request.method,
                target,
                proxy=self.proxies.for_url(target),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        except AIOHTTP_ERRORS as exc:
            raise _as_httpx_error(exc) from exc
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response),
            request=request,
            extensions=extensions,
        )


class StackClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` over the pool's aiohttp session, which it names for senders that
    go to aiohttp directly; redirects are never followed by it."""

    def __init__(self, session: aiohttp.ClientSession, proxies: EnvironmentProxies) -> None:
        super().__init__(
            transport=AiohttpTransport(session, proxies), follow_redirects=False, trust_env=False
        )
        self.session = session
        self.proxies = proxies


class ClientPool:
    """One aiohttp connector and session per distinct TLS setting, with its httpx client."""

    def __init__(self, limits: httpx.Limits, *, deny_private_targets: bool = False):
        self.limits = limits
        self.deny_private_targets = deny_private_targets
        self._clients: dict[tuple[str | None, bool], StackClient] = {}

    def get(self, ca_file: str | None = None, verify: bool = True) -> StackClient:
        """The client of one TLS setting (made on first use)."""
        key = (ca_file, verify)
        client = self._clients.get(key)
        if client is None:
            connector = new_connector(
                tls_context(ca_file, verify),
                self.limits,
                deny_private_targets=self.deny_private_targets,
            )
            session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
            proxies = (
                EnvironmentProxies.none() if self.deny_private_targets else EnvironmentProxies()
            )
            client = self._clients[key] = StackClient(session, proxies)
        return client

    def for_endpoints(self, endpoints: Iterable[Any], kind: str) -> dict[str, httpx.AsyncClient]:
        """Each endpoint's client by name, warning about every one that skips verification."""
        out: dict[str, httpx.AsyncClient] = {}
        for endpoint in endpoints:
            if not endpoint.tls_verify:
                log.warning(
                    "%s %s: tls_verify = false: its TLS certificate is NOT verified; anyone on "
                    "the network path can read and alter this traffic",
                    kind,
                    endpoint.name,
                    extra={kind: endpoint.name},
                )
            out[endpoint.name] = self.get(endpoint.ca_file, endpoint.tls_verify)
        return out

    async def aclose(self) -> None:
        """Close every client and its connections."""
        for client in self._clients.values():
            await client.aclose()
            await client.session.close()
        self._clients.clear()


def describe_http_error(exc: httpx.HTTPError) -> str:
    """One readable line for a transport error, naming the underlying cause when httpx does not."""
    cause = exc.__cause__
    if isinstance(cause, AIOHTTP_ERRORS):
        return describe_aiohttp_error(cause)
    kind = type(exc).__name__
    detail = str(exc) or _root_cause(exc) or kind
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {detail}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({kind})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"invalid HTTP response: {detail}"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return f"connection lost: {detail}"
    return f"{kind}: {detail}"


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
}


def describe_aiohttp_error(exc: BaseException) -> str:
    """One readable line for an aiohttp error, in our words (never aiohttp's ``ssl:default``)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed: {_describe_connect_error(exc)}"
    detail = str(exc) or _root_cause(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return f"connection lost: {detail}"
    if isinstance(
        exc,
        aiohttp.ClientPayloadError
        | aiohttp.ClientResponseError
        | aiohttp.http_exceptions.HttpProcessingError,
    ):
        return f"invalid HTTP response: {detail}"
    return f"{type(exc).__name__}: {detail}"


def _describe_connect_error(exc: aiohttp.ClientConnectorError) -> str:
    where = f"{exc.host}:{exc.port}"
    cause: BaseException | None = exc.os_error
    while cause is not None:  # a refusal may be wrapped by the connector or by happy eyeballs
        if isinstance(cause, RefusedTarget):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    os_error = exc.os_error
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"the TLS certificate of {where} was not accepted: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS with {where} failed: {os_error}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host}: {os_error.strerror or os_error}"
    if os_error.errno in _ERRNO_TEXT:
        return f"cannot connect to {where}: {_ERRNO_TEXT[os_error.errno]}"
    return f"cannot connect to {where}: {os_error.strerror or os_error}"


def _root_cause(exc: BaseException) -> str:
    seen: set[int] = set()
    found = ""
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if str(current):
            found = str(current)
        current = current.__cause__ or current.__context__
    return found
