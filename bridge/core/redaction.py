"""Redaction: secret values and URL passwords replaced by ``***`` before text leaves the process.

One :class:`Redactor` is built from the set of secrets a configuration holds; it is the only
place output is scrubbed, so a log line, an error and the ``check`` summary hide the same things.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are not redacted: replacing every "ab" in a text would hide more than it keeps."""

# scheme://user:PASSWORD@ in free text. The password runs to the last "@" before the path, as
# urlsplit reads it, so an unencoded "@" in a password cannot leave its tail visible.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)([^\s/]*)(@)")


_QUERY_PASSWORD = re.compile(r"(?<=[?&]password=)[^&#\s]+")
"""libpq takes ``?password=...`` in a connection URL, too."""


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo (and a ``password=`` query parameter, as
    libpq reads it) replaced by ``***``; the user name is kept."""
    url = _QUERY_PASSWORD.sub(MASK, url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


class Redactor:
    """Replaces every known secret, and the password of every URL, in a text by ``***``."""

    __slots__ = ("_pattern", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = frozenset(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
        # longest first, so a secret that contains another is replaced whole
        ordered = sorted(self._secrets, key=lambda s: (-len(s), s))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @property
    def secrets(self) -> frozenset[str]:
        """The values this redactor hides (those of at least four characters)."""
        return self._secrets

    def with_secrets(self, more: Iterable[str]) -> Redactor:
        """A redactor that hides these values as well as this one's."""
        return Redactor(self._secrets | set(more))

    def redact(self, text: str) -> str:
        """``text`` with every secret and every URL password replaced by ``***``."""
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)
        return text

    __call__ = redact
