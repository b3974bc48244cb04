"""How much pagination and conditional requests cost: one poll of a 10,000-item list.

    /tmp/venv/bin/python -m benchmarks.bench_polling

Against the local fake API on 127.0.0.1: the whole list in one page, the same list in 100
Link-header pages, and the same pages again when every page answers 304 Not Modified.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fake_apis import FakeAPI
from tests.support.pipelines import make_config, running
from tests.support.servers import serve

ITEMS = 10_000


async def _timed(h, rounds: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        outcome = await h.poll()
        best = min(best, time.perf_counter() - started)
        assert outcome.ok, outcome.error
    return best


def _source(url: str, extra: str) -> str:
    return f'[[sources]]\nname = "s"\nurl = "{url}"\nevery = "1m"\n{extra}\n'


PAGED = 'params = { per_page = 100 }\n[sources.paginate]\nkind = "link"\nmax_pages = 200\n'


async def main() -> None:
    fake = FakeAPI(count=ITEMS, page_size=100)
    results: dict[str, float] = {}
    with serve(fake) as server, tempfile.TemporaryDirectory() as tmp:
        cases = {
            "one page, conditional = false": _source(
                server.url("/items"), 'items = "$.data[*]"\nconditional = false'
            ),
            "100 Link pages, conditional = false": _source(
                server.url("/link"), "conditional = false\n" + PAGED
            ),
            "100 Link pages, every page answers 304": _source(server.url("/link"), PAGED),
        }
        for i, (label, text) in enumerate(cases.items()):
            async with running(make_config(Path(tmp) / str(i), text)) as h:
                await h.poll()
                results[label] = await _timed(h, 5)
        async with running(
            make_config(Path(tmp) / "last", _source(server.url("/link"), PAGED))
        ) as h:
            await h.poll()
            best = float("inf")
            for n in range(5):
                items = [dict(it) for it in fake.items]
                items[-1]["name"] = f"renamed {n}"
                fake.set_items(items)
                started = time.perf_counter()
                outcome = await h.poll()
                best = min(best, time.perf_counter() - started)
                assert outcome.ok and len(outcome.changes) == 1, outcome.error
            results["100 Link pages, last page changed (99 x 304, then a full walk)"] = best
    print(f"one poll of {ITEMS} items, best of 5:")
    for label, seconds in results.items():
        print(f"  {label:<64} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
