"""config/examples/github-events.toml polls a local newest-first event log like GitHub's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import iter_summary, load_config
from bridge.core.signing import generate_secret
from bridge.errors import ConfigError
from tests.support.event_logs import EventLogAPI
from tests.support.pipelines import running
from tests.support.servers import Request, serve

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "github-events.toml"


def _log_requests(requests: list[Request]) -> int:
    return sum(1 for r in requests if r.path.endswith("/events"))


async def test_github_events_example(tmp_path: Path) -> None:
    """A silent first poll reads page 1; new events are one github.event each; a quiet poll
    is one request answered 304."""
    fake = EventLogAPI(70, page_size=30)
    path = "/repos/octocat/Hello-World/events"

    def handler(req: Request):  # type: ignore[no-untyped-def]
        req.path = "/events" if req.path == path else req.path
        return fake(req)

    with serve(handler) as server:
        env = {
            "STATE_DIRECTORY": str(tmp_path),
            "WEBHOOK_SECRET": generate_secret(),
            "GITHUB_API": server.url("").rstrip("/"),
            "GITHUB_TOKEN": "ghp_test_token",
        }
        config = load_config(EXAMPLE, env)
        summary = "\n".join(iter_summary(config))
        assert "ghp_test_token" not in summary
        assert "mode: append: each new entry is one github.event event" in summary
        assert config.listeners[0].route().events == frozenset({"github.event"})
        async with running(config) as h:
            first = await h.poll()
            assert (first.result, first.pages, first.remembered) == ("baseline", 1, 30)
            fake.emit(3)
            new = await h.poll()
            assert [c.key_text for c in new.changes] == ["73", "72", "71"]
            assert {e.name for e in new.events} == {"github.event"}
            before = _log_requests(server.requests)
            quiet = await h.poll()
            assert quiet.not_modified and _log_requests(server.requests) - before == 1
    assert server.requests[0].headers["authorization"] == "Bearer ghp_test_token"
    assert server.requests[0].query == {"per_page": ["30"]}


def test_github_events_example_needs_its_secrets(tmp_path: Path) -> None:
    """Without the token and the signing secret the example refuses to load."""
    with pytest.raises(ConfigError, match=r"(is|are) not set in the environment"):
        load_config(EXAMPLE, {"STATE_DIRECTORY": str(tmp_path)})
