"""Connections that cannot hang: keepalives, session timeouts, a deadline that severs a silent
connection; and the row conversions every role of the PostgreSQL store shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow

from bridge.core.redaction import redact_url
from bridge.errors import StoreError
from bridge.models import Delivery, Event, SourceState
from bridge.store._rows import event_from_row, source_from_row

log = logging.getLogger("pollbridge.store")

Conn = psycopg.AsyncConnection[DictRow]

CALL_TIMEOUT_S = 60.0
"""The default deadline of one store call, waiting for a pooled connection included."""

_SESSION_TIMEOUTS = {
    # the server ends a statement (or a wait for a lock) that runs this long ...
    "statement_timeout": "30s",
    "lock_timeout": "15s",
    # ... and a session whose client vanished mid-transaction, releasing its row locks
    "idle_in_transaction_session_timeout": "60s",
}
"""Set on every pooled connection unless the URL's ``options`` set them already."""

_CONNINFO_DEFAULTS = {
    "connect_timeout": "10",
    # a peer that vanished without a FIN or RST is noticed by the kernel, idle or not
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
"""Added to the URL's parameters where it names none of its own."""

CHECK_IDLE_S = 10.0
"""A pooled connection idle this long is checked (one empty query) before it is used."""

CHECK_TIMEOUT_S = 5.0

LISTEN_PROBE_S = 30.0
"""The LISTEN connection is probed after this long without a notification."""


def bounded_conninfo(url: str) -> str:
    """``url`` as a conninfo string with the keepalive and connect timeouts it lacks."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreError(
            "open", f"invalid PostgreSQL URL: {exc}", location=redact_url(url)
        ) from exc
    missing = {k: v for k, v in _CONNINFO_DEFAULTS.items() if k not in given}
    return make_conninfo(url, **missing)


def session_timeouts(url: str) -> dict[str, str]:
    """The session timeouts to set: those the URL's ``options`` leave to us."""
    options = str(conninfo_to_dict(url).get("options") or "")
    return {
        name: value
        for name, value in _SESSION_TIMEOUTS.items()
        if not re.search(rf"-c\s*{name}\s*=", options)
    }


def _sever(conn: psycopg.AsyncConnection[Any]) -> None:
    """Cut a connection that stopped answering: its socket is shut down (no round trip), so
    the call waiting on it fails at once and the pool replaces it."""
    with contextlib.suppress(OSError, psycopg.Error):
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class Deadline:
    """Severs ``conn`` if it is still in use ``timeout_s`` from now (unless cancelled)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], timeout_s: float):
        self.expired = False
        self._handle = asyncio.get_running_loop().call_later(timeout_s, self._expire, conn)

    def _expire(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.expired = True
        _sever(conn)

    def cancel(self) -> None:
        self._handle.cancel()


def schema_of(url: str) -> str | None:
    """The schema named by the first ``search_path`` entry of the URL's options, if any."""
    try:
        options = conninfo_to_dict(url).get("options") or ""
    except psycopg.ProgrammingError as exc:
        raise StoreError(
            "open", f"invalid PostgreSQL URL: {exc}", location=redact_url(url)
        ) from exc
    match = re.search(r"-c\s*search_path\s*=\s*([^\s,]+)", str(options))
    return None if match is None else match.group(1).strip('"')


def describe_error(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        return f"{text} (is the PostgreSQL server reachable?)"
    return text


def utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


def row_to_event(row: Mapping[str, Any]) -> Event:
    return event_from_row(row, utc)


def row_to_source(row: Mapping[str, Any]) -> SourceState:
    return source_from_row(row, utc)


def row_to_delivery(row: Mapping[str, Any]) -> Delivery:
    return Delivery(
        row["delivery_id"], row["listener"], row_to_event(row), row["attempts"], row["next_at"]
    )
