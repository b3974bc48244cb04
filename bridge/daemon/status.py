"""The runtime status a daemon writes into the store every few seconds, and ``pollbridge
status`` (or another instance) reads back: one typed shape for both sides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SourceRuntime:
    schedule: str
    interval_s: float | None
    next_poll_at: str | None


@dataclass(frozen=True)
class ListenerRuntime:
    in_flight: int
    paused: bool
    state: str
    """``active``, ``paused``, ``breaker_open`` or ``breaker_half_open``."""


@dataclass(frozen=True)
class RuntimeStatus:
    """What a running daemon says of itself (times as ISO 8601 text, UTC)."""

    pid: int
    version: str
    started_at: str
    heartbeat_at: str
    stopped_at: str | None
    config_files: list[str]
    http: str | None
    sources: dict[str, SourceRuntime]
    listeners: dict[str, ListenerRuntime]
    last_reload: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)
    """Why the daemon is unhealthy right now (empty when it is healthy, or stopped)."""
    internal_errors: int = 0
    """Unexpected errors caught (and logged with a traceback) since start."""
    mode: str = "daemon"
    """``daemon`` (``pollbridge run``) or ``once`` (a finished ``run --once``)."""
    last_run: dict[str, Any] | None = None
    """What a ``run --once`` did: polls, failed, changes, delivered, pending, dead."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RuntimeStatus:
        """Read what any version wrote: keys it did not know get their defaults."""
        return cls(
            pid=int(doc.get("pid") or 0),
            version=str(doc.get("version") or "?"),
            started_at=str(doc.get("started_at") or ""),
            heartbeat_at=str(doc.get("heartbeat_at") or ""),
            stopped_at=doc.get("stopped_at"),
            config_files=list(doc.get("config_files") or []),
            http=doc.get("http"),
            sources={
                name: SourceRuntime(
                    schedule=str(s.get("schedule") or ""),
                    interval_s=s.get("interval_s"),
                    next_poll_at=s.get("next_poll_at"),
                )
                for name, s in (doc.get("sources") or {}).items()
            },
            listeners={
                name: ListenerRuntime(
                    in_flight=int(v.get("in_flight") or 0),
                    paused=bool(v.get("paused")),
                    state=str(v.get("state") or "active"),
                )
                for name, v in (doc.get("listeners") or {}).items()
            },
            last_reload=doc.get("last_reload"),
            problems=list(doc.get("problems") or []),
            internal_errors=int(doc.get("internal_errors") or 0),
            mode=str(doc.get("mode") or "daemon"),
            last_run=doc.get("last_run"),
        )
