"""What every verb shares: which configuration and state, opening the state, names and times."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tomllib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bridge.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    load_config,
    locate_state,
    resolve_config_path,
)
from bridge.config.modes import listener_event
from bridge.core.durations import parse_since
from bridge.core.redaction import redact_url
from bridge.display import dumps
from bridge.errors import BridgeError, NoStateError, UsageError
from bridge.models import CHANGE_TYPES
from bridge.store import Access, Store, create_store, is_state_file

LOCAL_CONFIG_PATH = Path("pollbridge.toml")
"""What ``pollbridge init`` writes by default, and the fallback when the system file is absent."""


def now_utc() -> datetime:
    return datetime.now(UTC)


def config_path(explicit: str | None, env: dict[str, str] | None = None) -> tuple[Path, bool]:
    """The configuration file a verb reads, and whether it is the ``./pollbridge.toml`` fallback.

    ``--config``, else ``$POLLBRIDGE_CONFIG``, else ``/etc/pollbridge/pollbridge.toml``; when
    that does not exist but ``./pollbridge.toml`` (what ``pollbridge init`` writes) does, that.
    """
    environ = dict(os.environ) if env is None else env
    path = resolve_config_path(explicit, environ)
    if (
        not explicit
        and not environ.get("POLLBRIDGE_CONFIG")
        and path == DEFAULT_CONFIG_PATH
        and not path.exists()
        and LOCAL_CONFIG_PATH.is_file()
    ):
        return LOCAL_CONFIG_PATH.absolute(), True
    return path, False


def settle_config(args: argparse.Namespace) -> None:
    """Fix ``args.config`` for a verb that reads one, saying so when the fallback applies."""
    if not hasattr(args, "config"):
        return
    path, fallback = config_path(args.config)
    if fallback:
        print(
            f"pollbridge: using {path} ({DEFAULT_CONFIG_PATH} does not exist)",
            file=sys.stderr,
        )
    args.config = str(path)


def load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def state_location(args: argparse.Namespace) -> str:
    if getattr(args, "state", None):
        if not is_state_file(args.state):
            return str(args.state)
        return str(Path(args.state).expanduser().absolute())
    return locate_state(args.config)


def since(text: str | None, at: datetime) -> datetime | None:
    """``--since 1h`` (a duration back from ``at``) or an RFC 3339 time."""
    if text is None:
        return None
    try:
        return parse_since(text, at)
    except ValueError as exc:
        raise UsageError(f"--since {exc}") from None


def event_type(text: str | None) -> str | None:
    """``--type``: ``updated`` or ``item.updated``, stored as ``updated``; or the named event
    type of an append source (``github.event``)."""
    if text is None:
        return None
    try:
        return listener_event(text)
    except ValueError:
        raise UsageError(
            f"--type {text!r}: expected one of {', '.join(CHANGE_TYPES)} or an append "
            "source's event_type (e.g. github.event)"
        ) from None


def with_store(
    args: argparse.Namespace,
    access: Access,
    body: Callable[[Store], Awaitable[int]],
    empty: Callable[[str], int],
) -> int:
    """Open the state read-only (or read-write without creating or migrating) and run ``body``;
    with no state yet, ``empty(location)`` answers instead."""
    location = state_location(args)

    async def go() -> int:
        store = create_store(location, access=access)
        try:
            await store.open()
        except NoStateError:
            return empty(redact_url(location))
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(go())


def no_state(
    args: argparse.Namespace,
    json_empty: Any,
    *,
    source: str | None = None,
    listener: str | None = None,
) -> Callable[[str], int]:
    """The answer of a read verb with no state yet: a note, and ``json_empty`` for ``--json``;
    a ``source`` / ``listener`` filter is checked against the configuration first."""

    def answer(location: str) -> int:
        require_configured(args, "source", source)
        require_configured(args, "listener", listener)
        print(f"pollbridge: no state yet at {location} (the daemon has not run)", file=sys.stderr)
        if getattr(args, "json", False):
            print(dumps(json_empty))
        return 0

    return answer


# -- one rule for names: an unknown source or listener is exit 1, naming the known ones --------


class UnknownName(BridgeError):
    """A source or listener name that neither the configuration nor the state knows (exit 1)."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind = kind
        self.name = name
        self.known = sorted(set(known))
        super().__init__(f"no {kind} named {name!r} (known: {', '.join(self.known) or 'none'})")


def require_source(config: Config, name: str) -> Any:
    """The configured source ``name``, or :class:`UnknownName`."""
    for source in config.sources:
        if source.name == name:
            return source
    raise UnknownName("source", name, (s.name for s in config.sources))


def require_listener(config: Config, name: str) -> Any:
    """The configured listener ``name``, or :class:`UnknownName`."""
    for listener in config.listeners:
        if listener.name == name:
            return listener
    raise UnknownName("listener", name, (lst.name for lst in config.listeners))


def configured_names(args: argparse.Namespace, table: str) -> set[str]:
    """The names in the configuration's ``[[sources]]`` or ``[[listeners]]`` (main file and
    conf.d), read without validating it: the inspection verbs work where its credentials
    are missing. Empty when there is no readable configuration."""
    main = Path(args.config) if getattr(args, "config", None) else None
    if main is None:
        return set()
    files = [main]
    conf_d = main.parent / "conf.d"
    if conf_d.is_dir():
        files.extend(sorted(conf_d.glob("*.toml")))
    names: set[str] = set()
    for path in files:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            continue
        entries = data.get(table)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                names.add(entry["name"])
    return names


async def require_known(
    store: Store | None,
    args: argparse.Namespace,
    kind: Literal["source", "listener"],
    name: str | None,
) -> None:
    """Raise :class:`UnknownName` when ``name`` (a ``--source`` / ``--listener`` filter, or a
    verb's argument) is a source or listener that neither the configuration nor the state
    (``store``; None when there is no state yet) has ever had."""
    if name is None:
        return
    table = f"{kind}s"
    known = configured_names(args, table)
    if store is not None:
        states = (
            await store.list_source_states()
            if kind == "source"
            else await store.list_listener_states()
        )
        known |= {s.name for s in states}
        known |= set((await store.read_runtime() or {}).get(table, {}))
    if name not in known:
        raise UnknownName(kind, name, known)


def require_configured(
    args: argparse.Namespace, kind: Literal["source", "listener"], name: str | None
) -> None:
    """:func:`require_known` with no state yet: only the configuration can know ``name``."""
    if name is not None:
        known = configured_names(args, f"{kind}s")
        if name not in known:
            raise UnknownName(kind, name, known)
