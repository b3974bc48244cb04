"""The ``pollbridge`` command: errors become one clear paragraph and a distinct exit code."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bridge import __version__
from bridge.config import Config, iter_summary, load_config
from bridge.core.durations import parse_duration
from bridge.errors import BridgeError, ConfigError, StoreError

EX_USAGE = 64
EX_IOERR = 74
EX_CONFIG = 78


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


# -- verbs ------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    for line in iter_summary(config):
        print(line)
    print("configuration OK")
    return 0


def cmd_poll(args: argparse.Namespace) -> int:
    from bridge.logs import configure_logging

    config = _config(args)
    configure_logging("warning", config.redact)
    source = config.source(args.name)
    return asyncio.run(_poll(config, source, args.commit))


async def _poll(config: Config, source: Any, commit: bool) -> int:
    import httpx

    from bridge.daemon import utcnow
    from bridge.pipeline import Pipeline
    from bridge.poller import HostLimiter, Poller
    from bridge.store import create_store

    store = create_store(config.state_location)
    await store.open()
    try:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            hosts = HostLimiter(config.bridge.per_host_concurrency, config.min_intervals_s())
            pipeline = Pipeline(config, store, Poller(client, hosts), clock=utcnow)
            outcome = await pipeline.poll(source, commit=commit)
    finally:
        await store.close()
    if not outcome.ok:
        print(f"pollbridge: {config.redact(outcome.error or 'poll failed')}", file=sys.stderr)
        return 1
    for change in outcome.changes:
        line = {
            "type": change.type,
            "key": change.key if isinstance(change.key, str) else list(change.key),
            "before": change.before,
            "after": change.after,
            "changes": change.changes,
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
    verb = "recorded" if commit else "would record"
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
        how = (
            "with a created event each"
            if source.baseline == "emit"
            else 'silently (baseline = "silent")'
        )
        print(
            f"{source.name}: no snapshot yet; the {outcome.result} {verb} "
            f"{outcome.item_count} item(s) {how}",
            file=sys.stderr,
        )
    else:
        print(
            f"{source.name}: {outcome.item_count} item(s), {len(outcome.changes)} change(s) "
            f"{'recorded' if commit else '(dry run: nothing recorded; add --commit to record)'}",
            file=sys.stderr,
        )
    if commit and outcome.events:
        print(f"{len(outcome.events)} event(s) queued for delivery", file=sys.stderr)
    return 0


def cmd_accept(args: argparse.Namespace) -> int:
    config = _config(args)
    source = config.source(args.name)
    return asyncio.run(_accept(config, source.name))


async def _accept(config: Config, name: str) -> int:
    from bridge.store import create_store

    store = create_store(config.state_location)
    await store.open()
    try:
        state = await store.get_source_state(name)
        if state is None or not state.held_reason:
            print(f"{name}: not held; nothing to accept", file=sys.stderr)
            return 0
        await store.update_source_state(name, accept_requested=True)
    finally:
        await store.close()
    print(
        f"{name}: the held result ({state.held_reason}) will be applied at its next poll",
        file=sys.stderr,
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bridge.daemon import Daemon
    from bridge.logs import configure_logging

    config = _config(args)
    override = "debug" if args.debug else None
    daemon = Daemon(config, log_level_override=override)
    configure_logging(
        override or config.bridge.log_level, daemon.redact, config.bridge.log_format
    )
    return asyncio.run(daemon.run_once() if args.once else daemon.run())


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo
    from bridge.logs import configure_logging

    configure_logging("warning")
    duration = None if args.duration is None else parse_duration(args.duration).total_seconds()
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


def cmd_resume(args: argparse.Namespace) -> int:
    """Un-pause a listener (410 Gone or disable_after); its queued deliveries go out again."""
    config = _config(args)
    names = [lst.name for lst in config.listeners]
    if args.listener not in names:
        raise ConfigError(
            f"no listener named {args.listener!r} (known: {', '.join(names) or 'none'})",
            file=config.files[0] if config.files else None,
        )
    return asyncio.run(_resume(config, args.listener))


async def _resume(config: Config, name: str) -> int:
    from bridge.daemon import utcnow
    from bridge.store import create_store

    store = create_store(config.state_location)
    await store.open()
    try:
        states = {s.name: s for s in await store.list_listener_states()}
        await store.set_listener_paused(name, False, None, utcnow())
        pending = await store.pending_count([name])
    finally:
        await store.close()
    state = states.get(name)
    if state is not None and state.paused:
        print(f"{name}: resumed (was paused: {state.paused_reason or 'no reason recorded'})")
    else:
        print(f"{name}: was not paused")
    print(f"{name}: {pending} delivery(ies) pending; a running daemon sends them within seconds")
    return 0


# -- plumbing ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pollbridge",
        description="Poll REST APIs, detect created/updated/deleted items, send signed webhooks.",
    )
    parser.add_argument("--version", action="version", version=f"pollbridge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=fn)
        p.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        return p

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            "-c",
            metavar="PATH",
            help="configuration file (default: $POLLBRIDGE_CONFIG, else /etc/pollbridge/pollbridge.toml)",
        )

    p = add("check", cmd_check, "validate the configuration and print a summary")
    config_arg(p)
    p = add("poll", cmd_poll, "poll one source now and print its changes as JSON lines")
    p.add_argument("name", help="the source's name")
    p.add_argument("--commit", action="store_true", help="record the poll as the daemon would")
    config_arg(p)
    p = add(
        "accept",
        cmd_accept,
        "apply a held poll (one that would delete too much) at the source's next poll",
    )
    p.add_argument("name", help="the held source's name")
    config_arg(p)
    p = add("run", cmd_run, "run the daemon: poll on schedule, deliver webhooks")
    p.add_argument(
        "--once",
        action="store_true",
        help="poll every source once, deliver what is due, exit (1: a poll failed, 75: deliveries pending)",
    )
    config_arg(p)
    p = add("demo", cmd_demo, "offline demo: example API -> pollbridge -> verifying receiver")
    p.add_argument(
        "--duration", metavar="DURATION", help="stop after e.g. 30s (default: until Ctrl-C)"
    )
    p = add("secret", cmd_secret, "print a fresh Standard Webhooks secret (whsec_...)")
    p.add_argument(
        "--bytes", type=int, default=32, choices=range(24, 65), metavar="N", help="24-64"
    )
    p.add_argument(
        "--asymmetric",
        action="store_true",
        help="print an ed25519 key pair instead: signing_key (whsk_...) and public key (whpk_...)",
    )
    p = add("resume", cmd_resume, "resume a paused or disabled listener; nothing queued is lost")
    p.add_argument("listener", help="the listener's name")
    config_arg(p)
    return parser


def _explain(exc: BaseException, config: Config | None) -> str:
    text = str(exc)
    if config is not None:
        text = config.redact(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    debug = bool(getattr(args, "debug", False)) or os.environ.get("POLLBRIDGE_DEBUG") == "1"
    args.debug = debug
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"pollbridge: configuration error: {exc}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return EX_CONFIG
    except StoreError as exc:
        print(f"pollbridge: {exc}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return EX_IOERR
    except BridgeError as exc:
        print(f"pollbridge: {_explain(exc, None)}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(
            f"pollbridge: unexpected error: {type(exc).__name__}: {exc}\n"
            "(run with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        if debug:
            traceback.print_exc()
        return 1
