"""The tools: ``demo``, ``listen``, ``init``, ``secret``, ``migrate-state`` and ``send-test``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.cli._common import (
    LOCAL_CONFIG_PATH,
    load,
    require_listener,
    require_source,
)
from bridge.cli._runtime import open_sender, utcnow
from bridge.config import Config, ListenerConfig
from bridge.core.durations import format_duration, parse_duration
from bridge.core.extract import key_text
from bridge.core.ids import new_event_id
from bridge.core.patch import make_patch
from bridge.core.signing import decode_public_key, decode_secret
from bridge.errors import BridgeError, NoStateError, StoreError, UsageError
from bridge.models import ChangeType, Event, ItemKey
from bridge.store import EventQuery, backend_of, create_store

EXCERPT_CHARS = 300


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo
    from bridge.logs import configure_logging

    configure_logging("warning")
    try:
        duration = None if args.duration is None else parse_duration(args.duration).total_seconds()
    except ValueError as exc:
        raise UsageError(f"--duration: {exc}") from None
    try:
        return run_demo(duration)
    except KeyboardInterrupt:
        return 0


def cmd_secret(args: argparse.Namespace) -> int:
    from bridge.core.signing import generate_key_pair, generate_secret

    if args.asymmetric:
        signing_key, public_key = generate_key_pair()
        print(f'signing_key = "{signing_key}"  # the listener\'s config: keep it secret')
        print(f'public_key = "{public_key}"  # give this to the receiver: it verifies v1a')
        return 0
    print(generate_secret(args.bytes))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from bridge.starter import write_starter

    path = Path(args.path)
    try:
        write_starter(path, force=args.force)
    except FileExistsError:
        raise BridgeError(f"{path} exists; give --force to overwrite it") from None
    except OSError as exc:
        raise BridgeError(f"cannot write {path}: {exc.strerror or exc}") from exc
    print(f"wrote {path} (mode 0600: it holds a webhook secret)")
    # ./pollbridge.toml is found without --config when /etc/pollbridge has none
    found = path.absolute() == LOCAL_CONFIG_PATH.absolute()
    check = "pollbridge check" if found else f"pollbridge check --config {path}"
    print(f"next: edit its [[sources]], then run: {check}")
    return 0


def cmd_migrate_state(args: argparse.Namespace) -> int:
    if backend_of(args.to) != "postgres":
        raise UsageError(f"--to must be a postgresql:// URL, got {args.to!r}")
    path = Path(args.from_)
    if not path.is_file():
        raise StoreError("migrate-state", "no such SQLite state file", location=str(path))
    from bridge.store.transfer import copy_sqlite_into_postgres

    location, counts = asyncio.run(copy_sqlite_into_postgres(path, args.to))
    copied = ", ".join(f"{n} {table}" for table, n in counts.items())
    print(f"copied {path} into {location}: {copied}")
    print("now set [bridge] state to that URL and start the instances (docs/scaling.md)")
    return 0


# -- listen -----------------------------------------------------------------------------------


def cmd_listen(args: argparse.Namespace) -> int:
    from bridge.receiver import Receiver, serve_forever

    for option, value, decode in (
        ("--secret", args.secret, decode_secret),
        ("--public-key", args.public_key, decode_public_key),
    ):
        if value:
            try:
                decode(value)
            except ValueError as exc:
                raise UsageError(f"{option}: {exc}") from None
    if args.forward_to and not args.forward_to.startswith(("http://", "https://")):
        raise UsageError(
            f"--forward-to: expected an http:// or https:// URL, got {args.forward_to!r}"
        )
    receiver = Receiver(
        out=sys.stdout,
        secret=args.secret,
        public_key=args.public_key,
        status=args.status,
        as_json=args.json,
        forward_to=args.forward_to,
    )
    checked = [k for k, v in (("v1", args.secret), ("v1a", args.public_key)) if v]
    signatures = (
        f"{' and '.join(checked)} signatures checked"
        if checked
        else "signatures NOT checked: give --secret whsec_… or --public-key whpk_…"
    )
    answer = (
        f"forwarding to {args.forward_to} and answering what it answers"
        if args.forward_to
        else f"answering {args.status}"
    )

    def ready(host: str, port: int) -> None:
        print(
            f"listening on http://{host}:{port}/ ({answer}; {signatures}); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )

    try:
        asyncio.run(serve_forever(receiver, args.host, args.port, ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise BridgeError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from exc
    return 0


# -- send-test --------------------------------------------------------------------------------

SAMPLE_KEY = "sample-1"
SAMPLE_BEFORE = {"id": SAMPLE_KEY, "status": "open", "total": 42.5}
SAMPLE_AFTER = {"id": SAMPLE_KEY, "status": "paid", "total": 42.5}


def sample_event(
    source: str,
    change_type: ChangeType,
    at: datetime,
    key: ItemKey | None = None,
    item: Any = None,
    before: Any = None,
) -> Event:
    """A realistic event of ``change_type``: around ``item`` (the source's stored item, with
    ``before`` an older version of it when one is known), else around a sample order."""
    if item is None:
        key, item, before = SAMPLE_KEY, SAMPLE_AFTER, SAMPLE_BEFORE
    assert key is not None  # noqa: S101 - given with item
    if change_type == "created":
        old, new = None, item
    elif change_type == "deleted":
        old, new = item, None
    else:
        old, new = (before if before is not None else item), item
    changes = make_patch(old, new) if change_type == "updated" else []
    return Event(new_event_id(at), 0, source, key, change_type, at, old, new, changes)


async def _stored_item(config: Config, source: str) -> tuple[ItemKey, Any, Any] | None:
    """The source's most recently changed item still in its snapshot (key, item, an older
    version), else any item of the snapshot; None without one. Opens the state read-only."""
    store = create_store(config.state_location, access="read")
    try:
        await store.open()
    except NoStateError:
        return None
    try:
        for record in reversed(await store.list_events(EventQuery(source=source, limit=20))):
            found = await store.load_items(source, [key_text(record.event.key)])
            if found:
                key, item = next(iter(found.values()))
                return key, item, record.event.before
        hashes = await store.load_hashes(source)
        if hashes.hashes:
            found = await store.load_items(source, [min(hashes.hashes)])
            if found:
                key, item = next(iter(found.values()))
                return key, item, None
        return None
    finally:
        await store.close()


def _source_for(config: Config, listener: ListenerConfig, name: str | None) -> str:
    if name is not None:
        return str(require_source(config, name).name)
    if listener.sources:
        return listener.sources[0]
    return config.sources[0].name if config.sources else "example"


def cmd_send_test(args: argparse.Namespace) -> int:
    config = load(args)
    listener = require_listener(config, args.listener)
    change_type: ChangeType = args.type.removeprefix("item.")
    source = _source_for(config, listener, args.source)
    return asyncio.run(_send_test(config, listener, source, change_type))


async def _send_test(
    config: Config, listener: ListenerConfig, source: str, change_type: ChangeType
) -> int:
    from bridge.core.render import RenderFailed, render_body
    from bridge.http.sender import webhook_headers

    stored = await _stored_item(config, source) if config.sources else None
    now = utcnow()
    event = (
        sample_event(source, change_type, now, *stored)
        if stored is not None
        else sample_event(source, change_type, now)
    )
    origin = (
        f"built from the stored item {key_text(event.key)} of {source}"
        if stored is not None
        else "a sample (no stored item yet)"
    )
    redact = config.redact
    print(f"{event.id}: item.{change_type} for {source}, {origin}; nothing is recorded")
    print(f"POST {redact(listener.url)}")
    try:
        body = render_body(listener.body_format, event)
    except RenderFailed:
        body = None
    if body is not None:
        for name, value in webhook_headers(listener, event, body, int(now.timestamp())).items():
            print(f"{name}: {redact(value)}")
        print()
        print(redact(_excerpt(body.decode("utf-8", "replace"), 2000)))
    print()
    async with open_sender(config) as sender:
        result = await sender.send(listener, event, now)
    took = f"{result.duration_s * 1000:.0f}ms"
    if result.ok:
        head = f"-> HTTP {result.status} in {took}: delivered"
    elif result.status is not None:
        head = f"-> HTTP {result.status} in {took}: FAILED: {result.error}"
    else:
        head = f"-> FAILED after {took}: {result.error}"
    print(redact(head))
    if result.response_excerpt:
        excerpt = " ".join(result.response_excerpt.split())  # an HTML page on one line
        print(f"   response: {redact(_excerpt(excerpt, EXCERPT_CHARS))}")
    fmt = listener.body_format
    shape = fmt.label if fmt.kind == "template" else f"format {fmt.kind}"
    print(f"(listener {listener.name}: {shape}, timeout {format_duration(listener.timeout)})")
    return 0 if result.ok else 1


def _excerpt(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
