"""config/examples/helpdesk-incremental.toml loads and polls a local "changed since" API."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import iter_summary, load_config
from bridge.core.signing import generate_secret
from tests.support.incremental_api import ChangedSinceAPI
from tests.support.pipelines import running
from tests.support.servers import serve

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "helpdesk-incremental.toml"


async def test_helpdesk_example(tmp_path):
    """A silent first list, then windows since the cursor minus 2m; a soft delete deletes."""
    fake = ChangedSinceAPI(count=250, per_page=100)
    with serve(fake) as server:
        env = {
            "STATE_DIRECTORY": str(tmp_path),
            "WEBHOOK_SECRET": generate_secret(),
            "HELPDESK_API": server.url("").rstrip("/"),
            "HELPDESK_TOKEN": "hd-token-1",
        }
        config = load_config(EXAMPLE, env)
        assert "hd-token-1" not in "\n".join(iter_summary(config))
        async with running(config) as h:
            first = await h.poll()
            assert (first.result, first.item_count, first.pages) == ("baseline", 250, 3)
            fake.change(10, status="solved")
            fake.change(11, status="deleted")
            changed = await h.poll()
    assert [(c.type, c.key_text) for c in changed.changes] == [
        ("updated", "10"),
        ("deleted", "11"),
    ]
    # the 2m lookback re-sees the 121 tickets updated in the API's last 2 minutes: two pages,
    # no event for them
    assert changed.pages == 2
    assert fake.asked == [None, "2026-03-01T09:02:10Z"]  # 09:04:10 minus the 2m lookback
    assert server.requests[0].headers["authorization"] == "Bearer hd-token-1"


def test_helpdesk_example_needs_its_secrets(tmp_path):
    with pytest.raises(Exception, match=r"(is|are) not set in the environment"):
        load_config(EXAMPLE, {"STATE_DIRECTORY": str(tmp_path)})
