"""The ``check`` summary: what the configuration will do, with every secret redacted."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from bridge.config.listeners import ListenerConfig
from bridge.config.risks import ConfigWarning
from bridge.config.schema import Config
from bridge.config.sources import SourceConfig
from bridge.core.durations import format_duration
from bridge.core.redaction import redact_url


def safe_url(url: str) -> str:
    """``url`` with any user:password part hidden, for output."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()


def _schedule(source: SourceConfig) -> str:
    return f"every {format_duration(source.every)}" if source.every else f"cron {source.cron!r}"


def iter_summary(config: Config) -> Iterable[str]:
    """Human-readable lines describing the configuration, with secrets redacted."""
    redact = config.redactor.redact
    yield f"config: {', '.join(config.files)}"
    yield f"state:  {redact(redact_url(config.state_location))}"
    yield f"sources ({len(config.sources)}):"
    for s in config.sources:
        fmt = "" if s.format == "json" else f", format {s.format}"
        yield (
            f"  - {s.name}: {s.request_method} {redact(safe_url(s.url))} {_schedule(s)}{fmt}, "
            f"items {s.items}, key {s.key}"
        )
        if s.graphql is not None:
            names = ", ".join(s.graphql.variables) or "none"
            lines = len(s.graphql.query.strip().splitlines())
            yield f"      graphql: query of {lines} line(s), variables {names}"
        if s.paginate is not None:
            body_param = getattr(s.paginate, "body_param", None)
            where = f" (in body {body_param})" if body_param else ""
            yield (
                f"      paginate: {s.paginate.kind}{where}, at most {s.paginate.max_pages} pages"
            )
        if s.detail is not None:
            per_host = config.bridge.per_host_concurrency
            capped = (
                f" (per_host_concurrency = {per_host} caps it)"
                if s.detail.concurrency > per_host
                else ""
            )
            yield (
                f"      detail: GET {redact(safe_url(s.detail.url))} per new or changed entry, "
                f"items {s.detail.items}, at most {s.detail.concurrency} at once{capped}"
            )
        if s.auth is not None:
            yield f"      auth: {s.auth.kind} (secrets ***)"
        yield from (f"      {line}" for line in _mode_lines(s))
        if s.incremental is not None:
            yield f"      incremental: {s.incremental.describe()}"
    for h in config.hosts:
        yield (
            f"host {h.name}: at most {config.bridge.per_host_concurrency} requests at once, "
            f"min_interval {format_duration(h.min_interval)}"
        )
    yield f"listeners ({len(config.listeners)}):"
    for lst in config.listeners:
        yield f"  - {lst.name}: POST {redact(safe_url(lst.url))} <- {_listener_summary(lst)}"
    # valid, but rarely what a new user meant: say so rather than leave them wondering later
    yield from (f"note: {note}" for note in _notes(config))


def _mode_lines(s: SourceConfig) -> list[str]:
    if s.mode == "append":
        walk = (
            "; stop_at_seen: no page after one holding a seen key"
            if s.paginate is not None and s.stop_at_seen
            else ""
        )
        return [
            f"mode: append: each new entry is one {s.event_type} event, never updated or "
            f"deleted; remembers seen keys {format_duration(s.remember)}, at most "
            f"{s.remember_count}{walk}"
        ]
    lines = [] if s.mode == "snapshot" else [f"mode: {s.mode}"]
    if s.confirm_deletes > 1:
        lines.append(
            f"confirm_deletes: an item is deleted once missing from {s.confirm_deletes} "
            "polls in a row"
        )
    return lines


def _mode_doc(s: SourceConfig) -> dict[str, Any]:
    doc: dict[str, Any] = {"mode": s.mode}
    if s.mode == "append":
        doc["append"] = {
            "event_type": s.event_type,
            "remember": format_duration(s.remember),
            "remember_count": s.remember_count,
            "stop_at_seen": s.stop_at_seen,
        }
    else:
        doc["confirm_deletes"] = s.confirm_deletes
    return doc


def _notes(config: Config) -> list[str]:
    routed = {
        name
        for lst in config.listeners
        for name in (lst.sources if lst.sources is not None else [s.name for s in config.sources])
    }
    unrouted = [s.name for s in config.sources if s.name not in routed]
    if config.sources and not config.listeners:
        return ["no [[listeners]]: changes are recorded, but sent nowhere"]
    if unrouted:
        return [
            f"no listener takes source(s) {', '.join(unrouted)}: their changes are "
            "recorded, but sent nowhere"
        ]
    return []


def _signed(lst: ListenerConfig) -> list[str]:
    signed = []
    if lst.keys.secrets:
        signed.append(f"{len(lst.keys.secrets)} secret(s) ***")
    if lst.keys.ed25519:
        signed.append("ed25519 key ***")
    return signed


def _pace(lst: ListenerConfig) -> list[str]:
    pace = [f"max_in_flight {lst.max_in_flight}"]
    if lst.rate_limit is not None:
        pace.append(f"rate {lst.rate_limit} (burst {lst.burst})")
    if lst.breaker_failures:
        pace.append(
            f"breaker after {lst.breaker_failures} failures for "
            f"{format_duration(lst.breaker_cooldown)}"
        )
    if lst.disable_after is not None:
        pace.append(f"disable after {format_duration(lst.disable_after)} of failures")
    if lst.coalesce:
        pace.append("coalesce")
    return pace


def _listener_summary(lst: ListenerConfig) -> str:
    parts = [
        ", ".join(lst.sources) if lst.sources is not None else "all sources",
        f"events {', '.join(lst.events)}",
    ]
    if lst.on_fields:
        parts.append(f"on_fields {', '.join(lst.on_fields)}")
    if lst.match is not None:
        parts.append(f"match {lst.match}")
    body = lst.body_format
    parts.append(
        f"body {body.label or body.kind} ({body.content_type})"
        if body.kind == "template"
        else f"format {body.kind} ({body.content_type})"
    )
    signed = _signed(lst)
    parts.append(f"signed ({', '.join(signed)})" if signed else "unsigned")
    parts.append(", ".join(_pace(lst)))
    return "; ".join(parts)


def summary_doc(config: Config, warnings: Sequence[ConfigWarning] = ()) -> dict[str, Any]:
    """The summary as a JSON-ready document (``check --json``), secrets redacted."""
    redact = config.redactor.redact
    return {
        "config": list(config.files),
        "state": redact(redact_url(config.state_location)),
        "sources": [
            {
                "name": s.name,
                "method": s.request_method,
                "url": redact(safe_url(s.url)),
                "schedule": _schedule(s),
                "format": s.format,
                "items": s.items,
                "key": s.key,
                "paginate": None if s.paginate is None else s.paginate.kind,
                "auth": None if s.auth is None else s.auth.kind,
                "graphql": None if s.graphql is None else {"variables": list(s.graphql.variables)},
                "detail": None
                if s.detail is None
                else {
                    "url": redact(safe_url(s.detail.url)),
                    "items": s.detail.items,
                    "concurrency": s.detail.concurrency,
                },
                **_mode_doc(s),
                "incremental": (None if s.incremental is None else s.incremental.summary_doc()),
            }
            for s in config.sources
        ],
        "hosts": [
            {"name": h.name, "min_interval": format_duration(h.min_interval)} for h in config.hosts
        ],
        "listeners": [
            {
                "name": lst.name,
                "url": redact(safe_url(lst.url)),
                "sources": lst.sources,
                "events": list(lst.events),
                "body": lst.body_format.label or lst.body_format.kind,
                "content_type": lst.body_format.content_type,
                "signed": bool(lst.keys),
                "pacing": _pace(lst),
            }
            for lst in config.listeners
        ],
        "notes": _notes(config),
        "warnings": [w.as_dict() for w in warnings],
    }
