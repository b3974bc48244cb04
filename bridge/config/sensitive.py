"""Secret discovery: every value of a configuration that must never be shown.

Found in three ways: values interpolated from the environment into a secret-looking place,
values written literally where a secret goes (listener keys, auth, credential headers and
parameters), and passwords inside URLs (an endpoint's, or the state database's).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus, unquote, urlsplit

from bridge.config.listeners import ListenerConfig
from bridge.config.schema import Config
from bridge.config.sources import BasicAuth, SourceConfig
from bridge.core.redaction import MIN_SECRET_LENGTH, Redactor

SECRET_PLACE = re.compile(
    r"secret|token|password|passwd|auth|headers|cookie|api_?key|signing_key|credential", re.I
)
"""Where a value taken from the environment is a secret (matched against its dotted location)."""

SECRET_NAME = re.compile(r"auth|token|secret|passw|key|cookie|session|signature", re.IGNORECASE)
"""A header or query parameter named like this carries a credential."""

_AUTH_SCHEMES = ("bearer", "basic", "token", "digest")


def credential_of(value: str) -> str:
    """The credential in a header value: ``Bearer abc`` -> ``abc`` (the scheme is no secret)."""
    scheme, _, credential = value.partition(" ")
    if credential and scheme.lower() in _AUTH_SCHEMES:
        return credential.strip()
    return value


def credential_pairs(endpoint: SourceConfig | ListenerConfig) -> Iterator[tuple[str, str]]:
    """(field, value) of each credential-looking header or query parameter of ``endpoint``."""
    for name, value in endpoint.headers.items():
        if SECRET_NAME.search(name) and value:
            yield f"headers.{name}", value
    if isinstance(endpoint, SourceConfig):
        for name, param in endpoint.params.items():
            if SECRET_NAME.search(name) and str(param):
                yield f"params.{name}", str(param)


def _url_secrets(url: str) -> set[str]:
    parts = urlsplit(url)
    if not parts.password:
        return set()
    userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password)}"
    # as written, decoded, and as sent in a Basic Authorization header
    return {parts.password, unquote(parts.password), base64.b64encode(userinfo.encode()).decode()}


def declared_secrets(config: Config) -> set[str]:
    """Secret values written literally: listener secrets, credential-looking headers and
    params, passwords in URLs (interpolated ``${VAR}`` values are collected by the loader)."""
    found: set[str] = set()
    endpoints: list[SourceConfig | ListenerConfig] = [*config.sources, *config.listeners]
    for endpoint in endpoints:
        if isinstance(endpoint, SourceConfig):
            found.update(endpoint.secrets)
            if isinstance(endpoint.auth, BasicAuth) and endpoint.auth.password:
                userinfo = f"{endpoint.auth.username}:{endpoint.auth.password}"
                found.add(base64.b64encode(userinfo.encode()).decode())
        for _field, value in credential_pairs(endpoint):
            found.add(credential_of(value))  # "Bearer ***" still says what was sent
        found |= _url_secrets(endpoint.url)
    for listener in config.listeners:
        for value in listener.sensitive_values():
            found.add(value)
            found.add(value.removeprefix("whsec_"))  # the key's base64, as a receiver may log it
    if config.bridge.http_token:
        found.add(config.bridge.http_token)
    return found


def with_encodings(values: Iterable[str]) -> set[str]:
    """Each secret and the forms it takes in a URL, so an echoed query string is caught too."""
    out: set[str] = set()
    for value in values:
        out |= {value, quote(value, safe=""), quote_plus(value)}
    return out


def build_redactor(config: Config, interpolated: Iterable[str], state_location: str) -> Redactor:
    """The redactor for ``config``: what it declares, what came from the environment into a
    secret place, and the password of the state database's URL."""
    values = {*interpolated, *declared_secrets(config), *_url_secrets(state_location)}
    return Redactor(with_encodings(v for v in values if len(v) >= MIN_SECRET_LENGTH))
