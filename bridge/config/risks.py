"""Risky settings: valid configurations that are probably not what production wants.

``pollbridge check`` prints these as warnings (``--strict`` makes any of them fatal); they are
never errors, since each has a legitimate use on a laptop or in a test.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from urllib.parse import unquote, urlsplit

from bridge.config.listeners import ListenerConfig
from bridge.config.schema import Config
from bridge.config.sensitive import credential_of, credential_pairs
from bridge.config.sources import SourceConfig

PUBLISHED_SECRETS = frozenset({"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
"""Secrets that pollbridge's own examples have shipped (in config/ and its history): anyone
can sign with them, so a configuration using one is signed in name only."""

_PLACEHOLDER = re.compile(
    r"change[-_ .]?me|replace[-_ .]?me|fill[-_ .]?me|fix[-_ ]?me|\btodo\b|placeholder|"
    r"your[-_ ]?(api[-_ ]?)?(token|secret|key|password)|^(x{3,}|\*{3,}|\.{3}|<[^>]*>|"
    r"secret|password|token|dummy|example)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ConfigWarning:
    """One risky setting: a stable ``code``, the entry it concerns and what to do about it."""

    code: str
    where: str
    message: str
    file: str = ""

    def __str__(self) -> str:
        place = ", ".join(p for p in (self.file, self.where) if p)
        return f"{place}: {self.message}" if place else self.message

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _host_kind(url: str) -> str:
    """``loopback``, ``private`` (an address literal on a private network) or ``public``."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "public"  # a name: it may resolve anywhere, and resolve elsewhere tomorrow
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_private or address.is_link_local:
        return "private"
    return "public"


def _credentials(endpoint: SourceConfig | ListenerConfig) -> Iterator[tuple[str, str]]:
    """(field, value) of every secret ``endpoint`` holds."""
    if isinstance(endpoint, ListenerConfig):
        for value in endpoint.sensitive_values():
            yield ("signing_key" if value.startswith("whsk_") else "secret"), value
    else:
        for value in endpoint.secrets:
            yield "auth", value
    for field, value in credential_pairs(endpoint):
        yield field, credential_of(value)
    password = urlsplit(endpoint.url).password
    if password:
        yield "url", unquote(password)


def _label(table: str, index: int, name: str) -> str:
    return f'{table} "{name}" ({table}[{index}])'


def risky_settings(config: Config) -> list[ConfigWarning]:
    """Every risky setting of ``config``, in file order."""
    found: list[ConfigWarning] = []

    def warn(code: str, table: str, index: int, name: str, message: str, field: str = "") -> None:
        where = _label(table, index, name) + (f", field {field}" if field else "")
        found.append(ConfigWarning(code, where, message, config.origin(table, name)))

    entries: list[tuple[str, int, SourceConfig | ListenerConfig]] = [
        *(("sources", i, s) for i, s in enumerate(config.sources)),
        *(("listeners", i, lst) for i, lst in enumerate(config.listeners)),
    ]
    for table, i, entry in entries:
        if not entry.tls_verify:
            warn(
                "tls-verify-off",
                table,
                i,
                entry.name,
                "anyone on the path can read and change this traffic; give ca_file for a "
                "private CA instead",
                "tls_verify",
            )
        for field, value in _credentials(entry):
            if value in PUBLISHED_SECRETS:
                warn(
                    "published-secret",
                    table,
                    i,
                    entry.name,
                    "this secret is published in pollbridge's examples; make your own with "
                    "`pollbridge secret`",
                    field,
                )
            elif field not in ("secret", "signing_key") and _PLACEHOLDER.search(value):
                warn(
                    "placeholder-secret",
                    table,
                    i,
                    entry.name,
                    "looks like a placeholder (change-me, your-token, ...); set the real "
                    "value, e.g. with ${VAR} and LoadCredential=",
                    field,
                )
    public_listener = False
    for i, lst in enumerate(config.listeners):
        kind = _host_kind(lst.url)
        public_listener |= kind == "public"
        if urlsplit(lst.url).scheme == "http" and kind != "loopback":
            warn(
                "plain-http-listener",
                "listeners",
                i,
                lst.name,
                "plain http:// to another host: webhooks (and their signatures) travel "
                "unencrypted; use https://",
                "url",
            )
        if not lst.keys:
            warn(
                "unsigned-listener",
                "listeners",
                i,
                lst.name,
                "no secret: the receiver cannot tell these webhooks from forged ones; add "
                "secret = ... (make one with `pollbridge secret`)",
            )
    if public_listener and not config.bridge.deny_private_targets:
        found.append(
            ConfigWarning(
                "private-targets-allowed",
                "[bridge], field deny_private_targets",
                "off while a listener's URL is a public name: if it resolves (or redirects) "
                "to an internal address, webhooks go there; set deny_private_targets = true",
                config.files[0] if config.files else "",
            )
        )
    exposed = exposure_warning(config.bridge.http_address, config.bridge.http_token)
    if exposed:
        found.append(
            ConfigWarning(
                "console-open",
                "[bridge], field http",
                exposed,
                config.files[0] if config.files else "",
            )
        )
    return found


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) reaches only this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(address: tuple[str, int] | None, token: str | None) -> str | None:
    """Why a console reachable from other machines without ``http_token`` is risky, or None
    (the text follows ``[bridge] http``: the daemon and ``check`` say where it is set)."""
    if address is None or token or is_loopback(address[0]):
        return None
    return (
        f"listens on {address[0]}, not only on loopback, and http_token is not set: anyone "
        "who reaches the port can read the console (events, item data, errors); bind to "
        '127.0.0.1 (behind a proxy), and set http_token = "${POLLBRIDGE_HTTP_TOKEN}" to act'
    )
