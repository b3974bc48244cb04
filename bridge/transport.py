"""The HTTP clients polls and deliveries go through.

- Requests go out over aiohttp's connection pool behind httpx's API (httpx-aiohttp): httpcore's
  pool does work for every pooled connection on each request (a ``poll()`` and a
  ``getpeername()`` per connection through anyio), ~1.7 ms of CPU per webhook against ~0.3 ms,
  and 41% of a core for 1,000 sources polled every 10 s against 14%
  (benchmarks/bench_delivery.py, bench_sources.py). The code and tests still speak httpx.
  With ``deny_private_targets`` the listener client keeps httpx's own transport, whose network
  backend does the address check below.
- TLS certificates are verified by default; an endpoint may name its own CA (``ca_file``) or,
  explicitly and loudly, turn verification off (``tls_verify = false``, warned at every start).
- ``[bridge] deny_private_targets = true`` refuses listener connections to loopback, private,
  link-local, shared (CGNAT) and IPv4-mapped addresses. The check runs when the connection is
  made, on the addresses DNS returned, and the socket connects to the very address that passed:
  a name that resolves differently a second later (DNS rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import anyio
import httpcore
import httpx
from httpx_aiohttp import AiohttpTransport

log = logging.getLogger("pollbridge.transport")

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


def tls_context(ca_file: str | None, verify: bool) -> ssl.SSLContext | bool:
    """What httpx's ``verify`` gets: the system/certifi store, a given CA, or no verification."""
    if not verify:
        return False
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return True


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


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]).split("%", 1)[0] for *_rest, sockaddr in infos]


class _PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself and connects only to an address that passed the check."""

    def __init__(
        self, resolve: Resolver | None = None, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._resolve = resolve or _getaddrinfo
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        allowed: list[str] = []
        refused: list[str] = []
        for address in addresses:
            why = refused_address(ipaddress.ip_address(address))
            if why is None:
                allowed.append(address)
            else:
                refused.append(f"{address} is {why}")
        if not allowed:
            raise httpcore.ConnectError(
                f"refused to connect to {host}: {'; '.join(dict.fromkeys(refused))} "
                "([bridge] deny_private_targets = true)"
            )
        last: Exception | None = None
        for address in dict.fromkeys(allowed):
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # noqa: S101 - allowed was not empty
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are refused (deny_private_targets = true)")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PublicOnlyTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, its connection pool given the public-only network backend."""

    def __init__(self, verify: ssl.SSLContext | bool, limits: httpx.Limits) -> None:
        super().__init__(verify=verify, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PublicOnlyBackend(),
        )


_AIOHTTP_ERRORS = (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError)


def _as_httpx_error(exc: Exception) -> httpx.TransportError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.http_exceptions.HttpProcessingError):
        return httpx.RemoteProtocolError(detail)
    return httpx.TransportError(detail)


class _MappedStream(httpx.AsyncByteStream):
    """A response body whose aiohttp errors surface as httpx errors, like the request's."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except _AIOHTTP_ERRORS as exc:
            raise _as_httpx_error(exc) from exc

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        except _AIOHTTP_ERRORS as exc:
            raise _as_httpx_error(exc) from exc


class _AiohttpTransport(AiohttpTransport):
    """aiohttp's pool behind httpx. Every aiohttp error becomes an httpx one (httpx-aiohttp
    lets a malformed response's parser error through), and credentials in a URL travel only as
    the Authorization header httpx made of them (aiohttp refuses a request with both)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.userinfo:
            request.url = request.url.copy_with(username=None, password=None)
        try:
            response = await super().handle_async_request(request)
        except _AIOHTTP_ERRORS as exc:
            raise _as_httpx_error(exc) from exc
        assert isinstance(response.stream, httpx.AsyncByteStream)  # noqa: S101
        response.stream = _MappedStream(response.stream)
        return response


class ClientPool:
    """One ``httpx.AsyncClient`` per distinct TLS setting; redirects are never followed by httpx."""

    def __init__(self, limits: httpx.Limits, *, deny_private_targets: bool = False):
        self.limits = limits
        self.deny_private_targets = deny_private_targets
        self._clients: dict[tuple[str | None, bool], httpx.AsyncClient] = {}

    def get(self, ca_file: str | None = None, verify: bool = True) -> httpx.AsyncClient:
        key = (ca_file, verify)
        client = self._clients.get(key)
        if client is None:
            tls = tls_context(ca_file, verify)
            if self.deny_private_targets:
                transport = _PublicOnlyTransport(tls, self.limits)
                client = httpx.AsyncClient(transport=transport, follow_redirects=False)
            else:
                fast = _AiohttpTransport(verify=tls, limits=self.limits)
                client = httpx.AsyncClient(transport=fast, follow_redirects=False)
            self._clients[key] = client
        return client

    def for_endpoints(self, endpoints: Iterable[Any], kind: str) -> dict[str, httpx.AsyncClient]:
        """Each endpoint's client by name, warning about every one that skips verification."""
        out = {}
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
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def describe_http_error(exc: httpx.HTTPError) -> str:
    """One readable line for a transport error, naming the underlying cause when httpx does not."""
    if isinstance(exc.__cause__, aiohttp.ClientError):
        return _describe_aiohttp_error(exc.__cause__)
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


def _describe_aiohttp_error(exc: aiohttp.ClientError) -> str:
    # The aiohttp transport maps its errors coarsely (a refused connection becomes a
    # ConnectTimeout, a reset a ConnectTimeout too); aiohttp's own exception says what happened.
    detail = str(exc) or _root_cause(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed: {detail}"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return f"connection lost: {detail}"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return f"invalid HTTP response: {detail}"
    return f"{type(exc).__name__}: {detail}"


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
