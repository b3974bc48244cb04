"""The control verbs: ``replay`` and ``resume`` (a running daemon notices them in seconds)."""

from __future__ import annotations

import argparse
import sys

from bridge.cli._common import now_utc, require_configured, require_known, since, with_store
from bridge.display import dumps
from bridge.errors import UsageError
from bridge.state_view import daemon_doc
from bridge.store import ReplayRequest, Store


def cmd_replay(args: argparse.Namespace) -> int:
    if bool(args.event_ids) == bool(args.dead):
        raise UsageError("give event ids, or --dead (not both)")
    if args.since and not args.dead:
        raise UsageError("--since goes with --dead")
    now = now_utc()
    request = ReplayRequest(
        event_ids=tuple(args.event_ids),
        dead=args.dead,
        listener=args.listener,
        since=since(args.since, now),
    )

    async def body(store: Store) -> int:
        await require_known(store, args, "listener", args.listener)
        result = await store.replay(request, now)
        if args.json:
            print(
                dumps(
                    {
                        "requeued": result.requeued,
                        "unknown_event_ids": list(result.unknown_event_ids),
                    }
                )
            )
        elif result.requeued:
            print(
                f"queued {result.requeued} delivery(ies) again (same event ids, fresh retry "
                f"schedule); {await who_sends(store, 'within a few seconds')}"
            )
        else:
            print("nothing to replay", file=sys.stderr)
        if result.unknown_event_ids:
            print(
                f"pollbridge: unknown event id(s): {', '.join(result.unknown_event_ids)}",
                file=sys.stderr,
            )
            return 1
        return 0

    def empty(location: str) -> int:
        require_configured(args, "listener", args.listener)
        print(f"pollbridge: no state yet at {location}: nothing to replay", file=sys.stderr)
        return 1 if args.event_ids else 0

    return with_store(args, "write", body, empty)


async def who_sends(store: Store, how_soon: str) -> str:
    """Who will send what an operator just queued: the running daemon, or nobody yet."""
    daemon = daemon_doc(await store.read_runtime(), now_utc())
    if daemon is not None and daemon["running"]:
        return f"a running daemon sends them {how_soon}"
    return "no daemon is running on this state: `pollbridge run` sends them when it starts"


def cmd_resume(args: argparse.Namespace) -> int:
    name = args.listener

    def answer(resumed: bool, reason: str | None, pending: int, text: list[str]) -> int:
        if args.json:
            print(
                dumps(
                    {
                        "listener": name,
                        "resumed": resumed,
                        "paused_reason": reason,
                        "pending": pending,
                    }
                )
            )
        else:
            print("\n".join(text))
        return 0

    async def body(store: Store) -> int:
        await require_known(store, args, "listener", name)
        states = {s.name: s for s in await store.list_listener_states()}
        state = states.get(name)
        if state is None or not state.paused:
            return answer(
                False, None, 0 if state is None else state.pending, [f"{name}: was not paused"]
            )
        await store.set_listener_paused(name, False, None, now_utc())
        return answer(
            True,
            state.paused_reason,
            state.pending,
            [
                f"{name}: resumed (was paused: {state.paused_reason or 'no reason recorded'})",
                f"{name}: {state.pending} delivery(ies) pending; "
                f"{await who_sends(store, 'within seconds')}",
            ],
        )

    def empty(location: str) -> int:
        require_configured(args, "listener", name)
        return answer(False, None, 0, [f"{name}: was not paused (no state yet at {location})"])

    return with_store(args, "write", body, empty)
