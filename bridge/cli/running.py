"""The verbs that run the pipeline: ``check``, ``poll``, ``accept`` and ``run``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bridge.cli._common import (
    load,
    require_configured,
    require_known,
    require_source,
    with_store,
)
from bridge.cli._runtime import make_daemon, poll_once, run_once
from bridge.config import Config, iter_summary, risky_settings, summary_doc
from bridge.display import dumps
from bridge.errors import NoStateError
from bridge.models import event_type_name
from bridge.store import Store, create_store

EX_CONFIG = 78  # app.EX_CONFIG (app imports this module): `check --strict` with warnings


def cmd_check(args: argparse.Namespace) -> int:
    config = load(args)
    warnings = risky_settings(config)
    if args.json:
        print(dumps(summary_doc(config, warnings)))
    else:
        for line in iter_summary(config):
            print(line)
        for warning in warnings:
            print(f"warning: {warning}")
    if args.strict and warnings:
        print(f"pollbridge check: {len(warnings)} warning(s), refused by --strict", file=sys.stderr)
        return EX_CONFIG
    if not args.json:
        print(f"configuration OK{f' ({len(warnings)} warning(s))' if warnings else ''}")
    return 0


def cmd_poll(args: argparse.Namespace) -> int:
    from bridge.logs import configure_logging

    config = load(args)
    configure_logging("warning", config.redact)
    source = require_source(config, args.name)
    return asyncio.run(_poll(config, source, args.commit))


async def _open_for_dry_run(location: str, scratch: Path) -> Store:
    """The state, read-only; with no state yet, an empty one in ``scratch``: a dry run must
    not create a state file (nor change one the daemon is using)."""
    store = create_store(location, access="read")
    try:
        await store.open()
    except NoStateError:
        store = create_store(str(scratch / "dry-run.db"))
        await store.open()
    return store


def tracked_lines(source: Any, outcome: Any, commit: bool) -> list[str]:
    """What a poll did to an append source's seen keys or to deletions awaiting confirmation."""
    lines = []
    if outcome.remembered is not None:
        walk = (
            f"{outcome.pages} page(s), stopped at a page holding a seen key"
            if outcome.stopped
            else f"{outcome.pages} page(s)"
        )
        lines.append(
            f"append: {len(outcome.changes)} new {source.event_type} entr(ies) in {walk}; "
            f"{outcome.remembered} key(s) {'remembered' if commit else 'would be remembered'} "
            f"(remember_count = {source.remember_count})"
        )
    if outcome.pending_deletes:
        shown = ", ".join(
            f"{key} ({polls} of {source.confirm_deletes})"
            for key, polls in sorted(outcome.pending_deletes.items())[:10]
        )
        more = len(outcome.pending_deletes) - 10
        lines.append(
            f"{len(outcome.pending_deletes)} missing item(s) not deleted yet (confirm_deletes = "
            f"{source.confirm_deletes}; polls missing so far): {shown}"
            + (f" and {more} more" if more > 0 else "")
        )
    return lines


def change_line(change: Any) -> dict[str, Any]:
    """One ``poll`` JSON line: the change, typed as in webhooks (``item.updated``)."""
    return {
        "type": event_type_name(change.type, change.name),
        "key": change.key if isinstance(change.key, str) else list(change.key),
        "before": change.before,
        "after": change.after,
        "changes": change.changes,
    }


async def _poll(config: Config, source: Any, commit: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="pollbridge-dry-run-") as scratch:
        if commit:
            store = create_store(config.state_location)
            await store.open()
        else:
            store = await _open_for_dry_run(config.state_location, Path(scratch))
        outcome = await poll_once(config, source, commit, store)
    if not outcome.ok:
        print(f"pollbridge: {config.redact(outcome.error or 'poll failed')}", file=sys.stderr)
        return 1
    for change in outcome.changes:
        sys.stdout.write(orjson.dumps(change_line(change)).decode() + "\n")
    verb = "recorded" if commit else "would record"
    for warning in outcome.warnings:
        print(f"{source.name}: warning: {warning}", file=sys.stderr)
    if outcome.asked is not None:
        stored = "stored" if commit and outcome.result != "held" else "would store"
        if outcome.result == "held":
            stored = "would store, once applied,"
        print(
            f"{source.name}: asked for the {outcome.asked}; sent "
            f"{source.incremental.param if source.incremental and source.incremental.param else 'cursor'}"
            f" = {outcome.cursor_sent or '(none)'}; {stored} cursor {outcome.cursor or '(none yet)'}",
            file=sys.stderr,
        )
    if outcome.result == "held":
        print(
            f"{source.name}: held: {outcome.held}; no events, snapshot unchanged "
            f"({outcome.held_polls} of {source.confirm_polls} confirmations"
            + ("" if commit else ", dry run")
            + f"; `pollbridge accept {source.name}` applies it at the next poll)",
            file=sys.stderr,
        )
        return 0
    if outcome.result in ("baseline", "rebaseline"):
        key = outcome.result  # the setting that decides: baseline, or rebaseline
        mode = source.baseline if key == "baseline" else source.rebaseline
        how = "with a created event each" if mode == "emit" else f'silently ({key} = "silent")'
        why = (
            "no snapshot yet"
            if key == "baseline"
            else "what defines its items changed (url, params, body, graphql, items, key, "
            "ignore, fields, format, paginate or detail)"
        )
        print(
            f"{source.name}: {why}; the {key} {verb} {outcome.item_count} item(s) {how}",
            file=sys.stderr,
        )
    else:
        print(
            f"{source.name}: {outcome.item_count} item(s), {len(outcome.changes)} change(s) "
            f"{'recorded' if commit else '(dry run: nothing recorded; add --commit to record)'}",
            file=sys.stderr,
        )
    if source.detail is not None:
        print(
            f"{source.name}: {outcome.detail_fetches} detail request(s), one per new or changed "
            "list entry",
            file=sys.stderr,
        )
    for line in tracked_lines(source, outcome, commit):
        print(f"{source.name}: {line}", file=sys.stderr)
    if commit and outcome.events:
        from bridge.core.routing import route_change

        routes = config.routes()
        queued = sum(
            len(route_change(source.name, change, routes, event.timestamp))
            for change, event in zip(outcome.changes, outcome.events, strict=False)
        )
        print(
            f"{len(outcome.events)} event(s) recorded, {queued} delivery(ies) queued"
            + ("" if queued else " (no listener takes them)"),
            file=sys.stderr,
        )
    return 0


def cmd_accept(args: argparse.Namespace) -> int:
    name = args.name

    def answer(held_reason: str | None, accepted: bool, note: str) -> int:
        if args.json:
            print(dumps({"source": name, "held_reason": held_reason, "accepted": accepted}))
        else:
            print(f"{name}: {note}", file=sys.stderr)
        return 0

    async def body(store: Store) -> int:
        await require_known(store, args, "source", name)
        state = await store.get_source_state(name)
        if state is None or not state.held_reason:
            return answer(None, False, "not held; nothing to accept")
        await store.update_source_state(name, accept_requested=True)
        return answer(
            state.held_reason,
            True,
            f"the held result ({state.held_reason}) will be applied at its next poll",
        )

    def empty(location: str) -> int:
        require_configured(args, "source", name)
        return answer(None, False, f"not held; nothing to accept (no state yet at {location})")

    return with_store(args, "write", body, empty)


def cmd_run(args: argparse.Namespace) -> int:
    from bridge.logs import configure_logging

    config = load(args)
    override = "debug" if args.debug else None
    daemon = make_daemon(config, override)
    configure_logging(override or config.bridge.log_level, daemon.redact, config.bridge.log_format)
    if not args.once:
        return asyncio.run(daemon.run())
    code, summary = asyncio.run(run_once(daemon))
    if summary is not None:
        print(summary.line())
    return code
