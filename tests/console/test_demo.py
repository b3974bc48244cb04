"""`pollbridge demo` prints the console's URL, and the console shows the demo's events live."""

from __future__ import annotations

import io
import re
import threading

import httpx

from bridge.demo import run_demo
from tests.support.daemon import eventually


class _Output(io.StringIO):
    """The demo's output, readable while the demo writes to it from its thread."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


def test_the_demo_serves_its_console():
    """The demo prints the console's URL and token; its events appear there as they happen,
    and the warehouse's failed attempts with them; the token logs in."""
    out = _Output()
    codes: list[int] = []
    demo = threading.Thread(
        target=lambda: codes.append(run_demo(8.0, interval_s=0.3, out=out, outage_s=30.0)),
        daemon=True,
    )
    demo.start()
    found = eventually(
        lambda: re.search(r"console +(http://\S+)/ui/ .*the token (\S+) to", out.text()),
        what="the console's URL",
        context=out.text,
    )
    base, token = found.group(1), found.group(2)
    first = eventually(
        lambda: httpx.get(base + "/ui/events?format=json").json(), what="the first events"
    )
    eventually(
        lambda: len(httpx.get(base + "/ui/events?format=json").json()) > len(first),
        what="more events, live",
    )
    overview = httpx.get(base + "/ui/")
    assert overview.status_code == 200 and 'data-name="warehouse"' in overview.text
    status = httpx.get(base + "/ui/?format=json").json()
    assert [s["name"] for s in status["sources"]] == ["orders"]
    warehouse = eventually(
        lambda: httpx.get(base + "/ui/deliveries?format=json&listener=warehouse").json(),
        what="deliveries to the warehouse",
    )
    event = httpx.get(base + f"/ui/events/{warehouse[0]['event_id']}").text
    assert "503" in event
    login = httpx.post(base + "/ui/login", data={"token": token}, headers={"Origin": base})
    assert login.status_code == 303
    assert token not in overview.text
    demo.join(30)
    assert codes == [0]
    assert "demo finished" in out.text()
