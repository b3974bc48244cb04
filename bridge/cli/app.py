"""The ``pollbridge`` command: the parser, the exit codes, and errors as one clear paragraph.

The verbs live by role: ``running`` (check, poll, accept, run), ``inspection`` (status,
events, show, deliveries, leases), ``control`` (replay, resume) and ``tools`` (demo, listen,
init, secret, migrate-state, send-test).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from bridge import __version__
from bridge.cli._common import settle_config
from bridge.cli.control import cmd_replay, cmd_resume
from bridge.cli.inspection import cmd_deliveries, cmd_events, cmd_leases, cmd_show, cmd_status
from bridge.cli.running import cmd_accept, cmd_check, cmd_poll, cmd_run
from bridge.cli.tools import (
    cmd_demo,
    cmd_init,
    cmd_listen,
    cmd_migrate_state,
    cmd_secret,
    cmd_send_test,
)
from bridge.errors import BridgeError, ConfigError, StoreError, UsageError
from bridge.models import CHANGE_TYPES
from bridge.store import is_state_file

EX_USAGE = 64
EX_IOERR = 74
EX_CONFIG = 78
EX_SIGPIPE = 128 + 13
"""A closed stdout (``pollbridge status | head -1``): the status a shell gives ``yes | head``."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a wrong command line exits 64 (EX_USAGE) like pollbridge's own checks."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.verbs: list[str] = []
        """The verbs added with :func:`build_parser`, in help order."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _int_between(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            expected = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def build_parser() -> _Parser:
    """The whole command line: every verb, its options and its help."""
    parser = _Parser(
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
        parser.verbs.append(name)
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
            help="configuration file (default: $POLLBRIDGE_CONFIG, else /etc/pollbridge/pollbridge.toml, "
            "else ./pollbridge.toml)",
        )

    def state_args(p: argparse.ArgumentParser, json_help: str = "print JSON for scripts") -> None:
        config_arg(p)
        p.add_argument(
            "--state-file",
            dest="state",
            metavar="PATH",
            help="the state file (default: [bridge] state of the configuration)",
        )
        p.add_argument("--json", action="store_true", help=json_help)

    p = add("check", cmd_check, "validate the configuration and print a summary")
    p.add_argument("--strict", action="store_true", help="exit 78 when there is any warning")
    p.add_argument("--json", action="store_true", help="the summary and warnings as JSON")
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
    state_args(p)
    p = add("run", cmd_run, "run the daemon: poll on schedule, deliver webhooks")
    p.add_argument(
        "--once",
        action="store_true",
        help="poll every source once, deliver what is due, exit (1: a poll failed, 75: deliveries pending)",
    )
    config_arg(p)
    p = add(
        "migrate-state",
        cmd_migrate_state,
        "copy a SQLite state (snapshots, events, deliveries) into an empty PostgreSQL database",
    )
    p.add_argument("--from", dest="from_", required=True, metavar="PATH", help="the SQLite file")
    p.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host/db")

    p = add("leases", cmd_leases, "show which instance polls which source (PostgreSQL state)")
    state_args(p)
    p = add("demo", cmd_demo, "offline demo: example API -> pollbridge -> verifying receiver")
    p.add_argument(
        "--duration", metavar="DURATION", help="stop after e.g. 30s (default: until Ctrl-C)"
    )
    p = add("secret", cmd_secret, "print a fresh Standard Webhooks secret (whsec_...)")
    p.add_argument(
        "--bytes", type=_int_between(24, 64), default=32, metavar="N", help="24-64 (default 32)"
    )
    p.add_argument(
        "--asymmetric",
        action="store_true",
        help="print an ed25519 key pair instead: signing_key (whsk_...) and public key (whpk_...)",
    )

    p = add("status", cmd_status, "what every source and listener is doing (safe while running)")
    state_args(p)
    p = add("events", cmd_events, "list recorded events, newest last")
    p.add_argument("--source", metavar="S", help="only this source")
    p.add_argument(
        "--key", metavar="K", help="only this item key (a JSON array for a composite key)"
    )
    p.add_argument("--type", metavar="T", help="created, updated or deleted")
    p.add_argument("--since", metavar="WHEN", help="e.g. 1h, 2d, or 2026-11-23T12:00:00Z")
    p.add_argument(
        "--limit", type=_int_between(1), default=50, metavar="N", help="at most N (default 50)"
    )
    state_args(p)
    p = add("show", cmd_show, "one event with every delivery attempt")
    p.add_argument("event_id", metavar="EVENT_ID")
    state_args(p)
    p = add("deliveries", cmd_deliveries, "list deliveries, newest last")
    p.add_argument("--listener", metavar="L", help="only this listener")
    p.add_argument(
        "--state",
        dest="state_filter",
        choices=["pending", "dead", "delivered", "coalesced"],
        help="only deliveries in this state (coalesced: merged by coalesce = true)",
    )
    p.add_argument("--since", metavar="WHEN", help="changed since, e.g. 1h or 2d")
    p.add_argument(
        "--limit", type=_int_between(1), default=50, metavar="N", help="at most N (default 50)"
    )
    state_args(p)
    p = add("replay", cmd_replay, "queue deliveries again (same event ids, so receivers dedupe)")
    p.add_argument("event_ids", nargs="*", metavar="EVENT_ID")
    p.add_argument("--dead", action="store_true", help="every dead delivery")
    p.add_argument("--listener", metavar="L", help="only deliveries to this listener")
    p.add_argument("--since", metavar="WHEN", help="with --dead: died since, e.g. 1d")
    state_args(p)
    p = add("resume", cmd_resume, "resume a paused or disabled listener; nothing queued is lost")
    p.add_argument("listener", metavar="LISTENER", help="the listener's name")
    state_args(p)
    p = add("listen", cmd_listen, "a local webhook receiver printing what arrives (debugging)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=_int_between(0, 65535),
        default=8787,
        help="port (default 8787; 0 picks one)",
    )
    p.add_argument("--secret", metavar="whsec_…", help="verify v1 signatures with this secret")
    p.add_argument(
        "--public-key", metavar="whpk_…", help="verify v1a (ed25519) signatures with this key"
    )
    p.add_argument(
        "--forward-to",
        metavar="URL",
        help="also pass each webhook on unchanged to URL, and answer what it answers",
    )
    p.add_argument(
        "--status",
        type=_int_between(200, 599),
        default=204,
        metavar="CODE",
        help="answer with this HTTP status (default 204; with --forward-to, URL's status)",
    )
    p.add_argument("--json", action="store_true", help="one JSON line per webhook")
    p = add("init", cmd_init, "write a commented starter configuration")
    p.add_argument(
        "path",
        nargs="?",
        default="pollbridge.toml",
        metavar="PATH",
        help="where to write it (default pollbridge.toml)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p = add(
        "send-test",
        cmd_send_test,
        "send one signed test webhook to a listener and show the request and the answer",
    )
    p.add_argument("listener", metavar="LISTENER", help="the listener's name")
    p.add_argument(
        "--type",
        default="item.updated",
        choices=[f"item.{t}" for t in CHANGE_TYPES] + list(CHANGE_TYPES),
        metavar="TYPE",
        help="item.created, item.updated (default) or item.deleted",
    )
    p.add_argument(
        "--source", metavar="S", help="the event's source (default: the listener's first)"
    )
    config_arg(p)
    return parser


def _access_hint(exc: StoreError) -> str:
    """Why SQLite's "unable to open database file" happened, when it is file permissions: the
    state of a systemd service (DynamicUser) belongs to a user the operator's shell is not."""
    if not exc.location or not is_state_file(exc.location):
        return ""
    path = Path(exc.location)
    blocked = next(
        (
            p
            for p in (path, path.parent)
            if p.exists() and not os.access(p, os.R_OK | os.W_OK if p.is_dir() else os.R_OK)
        ),
        None,
    )
    if blocked is None:
        return ""
    return (
        f"\n(this user may not {'read' if blocked == path else 'write in'} {blocked}; "
        "run the command as the state's owner, e.g. with sudo)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    debug = bool(getattr(args, "debug", False)) or os.environ.get("POLLBRIDGE_DEBUG") == "1"
    args.debug = debug
    try:
        settle_config(args)
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        return _closed_stdout()
    except UsageError as exc:
        print(f"pollbridge {args.verb}: {exc}", file=sys.stderr)
        return EX_USAGE
    except ConfigError as exc:
        print(f"pollbridge: configuration error: {exc}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return EX_CONFIG
    except StoreError as exc:
        print(f"pollbridge: {exc}{_access_hint(exc)}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return EX_IOERR
    except BridgeError as exc:
        print(f"pollbridge: {exc}", file=sys.stderr)
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


def _closed_stdout() -> int:
    """The reader of our stdout went away (``| head -1``): stop quietly. What is still
    buffered goes nowhere, so that the interpreter's own flush at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
    return EX_SIGPIPE
