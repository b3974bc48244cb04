"""The web console of a real daemon: every page and its JSON twin after a run with changes, a
failing listener and a held poll; each action with and without the token and CSRF token; no
secret on any page; and a real browser (headless Chromium) through overview -> event -> replay."""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bridge.core.signing import decode_secret, generate_secret, verify
from tests.support import configs
from tests.support.daemon import DaemonProcess, eventually, run_cli
from tests.support.servers import ItemsAPI, Reply, TestServer, serve

pytestmark = pytest.mark.e2e

CONSOLE_TOKEN = "console-token-0123456789abcdef"
API_TOKEN = "api-token-s3cr3t-value"


@dataclass
class Run:
    """A daemon with changes, a failing listener ("broken"), a held poll ("catalog")."""

    daemon: DaemonProcess
    base: str
    config: Path
    env: dict[str, str]
    receiver: TestServer
    broken: TestServer
    broken_fixed: threading.Event
    slow: TestServer
    gone: TestServer
    catalog: ItemsAPI

    @property
    def secrets(self) -> list[str]:
        hook = self.env["HOOK_SECRET"]
        return [API_TOKEN, hook, hook.removeprefix("whsec_"), self.env.get("CONSOLE_TOKEN", "")]

    def cli_json(self, *args: str) -> object:
        result = run_cli(*args, "--json", "--config", str(self.config), env=self.env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@contextmanager
def _run(tmp_path: Path, items_api, receiver, *, token: bool = True) -> Iterator[Run]:
    api, api_server = items_api
    api.set({"id": 1, "status": "open", "total": 10}, {"id": 2, "status": "open", "total": 20})
    catalog = ItemsAPI()
    catalog.set(*({"id": n, "name": f"product {n}"} for n in range(1, 13)))
    fixed = threading.Event()

    def broken_reply(_req) -> Reply:
        if fixed.is_set():
            return Reply(204)
        # a receiver that echoes a secret back: the console must not show it
        return Reply(500, f"the receiver is broken (it saw {API_TOKEN})")

    env = {"API_TOKEN": API_TOKEN, "HOOK_SECRET": generate_secret()}
    if token:
        env["CONSOLE_TOKEN"] = CONSOLE_TOKEN
    with (
        serve(catalog) as catalog_server,
        serve(broken_reply) as broken,
        serve(lambda _r: Reply(200, [])) as slow,
        serve(lambda _r: Reply(410, "gone")) as gone,
    ):
        config = configs.write_config(
            tmp_path / "pollbridge.toml",
            configs.source(
                "orders",
                api_server.url("/orders"),
                headers={"Authorization": "Bearer ${API_TOKEN}"},
            ),
            configs.source(
                "catalog", catalog_server.url("/catalog"), every="300ms", confirm_polls=1000
            ),
            configs.source("slow", slow.url("/slow"), every="1h", items="$[*]"),
            configs.listener(
                "hooks",
                receiver.url("/hooks"),
                secret="${HOOK_SECRET}",
                sources=["orders", "catalog"],
            ),
            configs.listener("broken", broken.url("/hooks"), retry=["100ms"], sources=["orders"]),
            configs.listener("gone", gone.url("/hooks"), sources=["orders"]),
            http="127.0.0.1:0",
            http_token="${CONSOLE_TOKEN}" if token else None,
        )
        with DaemonProcess(config, env=env) as daemon:
            base = daemon.wait_output(r"the console on (http://\S+)/ui/").group(1)
            api_server.wait_count(1)
            catalog_server.wait_count(1)
            api.set({"id": 1, "status": "shipped", "total": 10}, {"id": 3, "status": "new"})
            catalog.set({"id": 1, "name": "product 1"})  # 11 of 12 deleted: held
            receiver.wait_count(3)
            run = Run(daemon, base, config, env, receiver, broken, fixed, slow, gone, catalog)

            def settled() -> bool:
                doc = httpx.get(base + "/ui/?format=json").json()
                sources = {s["name"]: s for s in doc["sources"]}
                listeners = {lst["name"]: lst for lst in doc["listeners"]}
                return (
                    sources["catalog"]["state"] == "held"
                    and listeners["broken"]["dead"] == 3
                    and listeners["gone"]["state"] == "paused"
                )

            eventually(settled, what="a held catalog and 3 dead deliveries", context=daemon.output)
            yield run


def _no_secret(run: Run, text: str) -> None:
    for secret in run.secrets:
        if secret:
            assert secret not in text


def _event_ids(run: Run, source: str) -> list[str]:
    return [e["id"] for e in httpx.get(run.base + f"/ui/events?format=json&source={source}").json()]


def test_every_page_and_its_json_twin(tmp_path, items_api, receiver):
    """Overview, events, an event and deliveries answer 200 with the names and numbers of the
    run; each JSON twin equals the CLI's --json output; no page shows a secret; every answer
    carries the security headers."""
    with _run(tmp_path, items_api, receiver) as run:
        base = run.base
        overview = httpx.get(base + "/ui/")
        assert overview.status_code == 200
        html = overview.text
        for name in ("orders", "catalog", "slow", "hooks", "broken", "gone"):
            assert f'data-name="{name}"' in html
        assert "held: " in html and "would delete 11 of 12 items" in html
        assert re.search(r'state=dead">3</a>', html)  # broken's dead count, linked
        assert "paused: the listener answered 410 Gone" in html
        assert "<svg" in html and "polls in the last 24 h" in html
        assert "Log in to act" in html  # a token is set, but this client is not logged in
        assert 'action="/ui/sources/' not in html  # no action buttons before logging in
        headers = overview.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"

        status = httpx.get(base + "/ui/?format=json").json()
        cli_status = run.cli_json("status")
        for key in ("sources", "listeners"):
            mine = {r["name"]: r for r in status[key]}
            theirs = {r["name"]: r for r in cli_status[key]}
            assert (
                set(mine)
                == set(theirs)
                == (
                    {"orders", "catalog", "slow"}
                    if key == "sources"
                    else {"hooks", "broken", "gone"}
                )
            )
            for name, row in mine.items():
                assert row.keys() == theirs[name].keys()
                for field in ("state", "item_count", "pending", "dead", "delivered", "held_reason"):
                    assert row.get(field) == theirs[name].get(field), (name, field)
        assert status["state"] == cli_status["state"]

        events = httpx.get(base + "/ui/events")
        assert events.status_code == 200
        for text in ("orders", "created", "updated", "deleted", "broken: dead", "hooks: delivered"):
            assert text in events.text
        twin = httpx.get(base + "/ui/events?format=json").json()
        assert twin == run.cli_json("events", "--limit", "200")
        assert {e["type"] for e in twin} == {"item.created", "item.updated", "item.deleted"}
        assert len(twin) == 3  # silent baselines; then orders' update, creation, deletion
        filtered = httpx.get(base + "/ui/events?format=json&type=updated&source=orders").json()
        assert [e["type"] for e in filtered] == ["item.updated"]

        updated = filtered[0]
        page = httpx.get(base + f"/ui/events/{updated['id']}")
        assert page.status_code == 200
        assert 'class="changed"' in page.text and "/status" in page.text
        assert "shipped" in page.text and "open" in page.text
        assert "HTTP 500" in page.text and "the receiver is broken" in page.text
        assert f'"id": "{updated["id"]}"' in html_lib.unescape(page.text)  # the body sent
        show = httpx.get(base + f"/ui/events/{updated['id']}?format=json").json()
        assert show == run.cli_json("show", updated["id"])
        assert {d["listener"]: d["state"] for d in show["deliveries"]} == {
            "hooks": "delivered",
            "broken": "dead",
            "gone": "pending",
        }
        assert httpx.get(base + "/ui/events/evt_nope").status_code == 404

        deliveries = httpx.get(base + "/ui/deliveries?listener=broken&state=dead")
        assert deliveries.status_code == 200
        assert deliveries.text.count('class="pill dead"') == 3
        twin = httpx.get(base + "/ui/deliveries?format=json").json()
        assert twin == run.cli_json("deliveries", "--limit", "200")
        assert len(twin) == 9  # each of the 3 events to hooks, broken and gone
        assert httpx.get(base + "/ui/deliveries?state=bogus").status_code == 400
        assert httpx.get(base + "/ui/events?since=yesterday-ish").status_code == 400

        pages = [
            "/ui/",
            "/ui/?format=json",
            "/ui/events",
            "/ui/events?format=json",
            "/ui/deliveries",
            "/ui/deliveries?format=json",
            "/ui/login",
            f"/ui/events/{updated['id']}",
            f"/ui/events/{updated['id']}?format=json",
        ]
        for path in pages:
            reply = httpx.get(base + path)
            assert reply.status_code == 200, path
            assert "frame-ancestors 'none'" in reply.headers["content-security-policy"]
            _no_secret(run, reply.text)
        css = httpx.get(base + "/ui/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert run.daemon.terminate() == 0, run.daemon.output()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def test_actions_need_the_token_and_the_csrf_token(tmp_path, items_api, receiver):
    """Without a login every action is 403; a logged-in form POST without the CSRF token, or
    from another origin, is 403; with both, replay-dead, replay, resume, accept, poll and
    send-test do what the CLI verbs do, and the bearer token works for scripts."""
    with _run(tmp_path, items_api, receiver) as run:
        base = run.base
        origin = {"Origin": base}
        dead_path = base + "/ui/listeners/broken/replay-dead"
        attempts = len(run.broken.requests)
        refused = httpx.post(dead_path, data={"next": "/ui/"}, headers=origin)
        assert refused.status_code == 403 and "log in first" in refused.text
        wrong = httpx.post(base + "/ui/events/x/replay", headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 403 and wrong.json()["ok"] is False

        with httpx.Client(base_url=base) as browser:
            assert (
                browser.post("/ui/login", data={"token": "guess"}, headers=origin).status_code
                == 403
            )
            login = browser.post(
                "/ui/login", data={"token": CONSOLE_TOKEN, "next": "/ui/"}, headers=origin
            )
            assert login.status_code == 303 and login.headers["location"] == "/ui/"
            cookie = login.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert CONSOLE_TOKEN not in cookie
            overview = browser.get("/ui/")
            assert 'action="/ui/listeners/broken/replay-dead"' in overview.text
            assert 'action="/ui/sources/catalog/accept"' in overview.text
            csrf = _csrf(overview.text)

            no_csrf = browser.post("/ui/listeners/broken/replay-dead", data={}, headers=origin)
            assert no_csrf.status_code == 403 and "anti-CSRF" in no_csrf.text
            cross = browser.post(
                "/ui/listeners/broken/replay-dead",
                data={"csrf": csrf},
                headers={"Origin": "http://evil.example"},
            )
            assert cross.status_code == 403 and "cross-origin" in cross.text
            no_origin = browser.post("/ui/listeners/broken/replay-dead", data={"csrf": csrf})
            assert no_origin.status_code == 403
            assert len(run.broken.requests) == attempts  # nothing was replayed by those

            run.broken_fixed.set()
            replayed = browser.post(
                "/ui/listeners/broken/replay-dead",
                data={"csrf": csrf, "next": "/ui/"},
                headers=origin,
            )
            assert replayed.status_code == 303
            notice = browser.get("/ui/")
            assert "broken: queued 3 dead delivery(ies) again" in notice.text
            run.broken.wait_count(attempts + 3)
            eventually(
                lambda: not run.cli_json("deliveries", "--state", "dead"),
                what="no dead delivery left",
            )

            # replay one event by its id: the same webhook-id again, to both of its listeners
            event_id = _event_ids(run, "orders")[0]
            got = len(run.receiver.requests)
            again = browser.post(
                f"/ui/events/{event_id}/replay",
                data={"csrf": csrf, "next": f"/ui/events/{event_id}"},
                headers=origin,
            )
            assert (
                again.status_code == 303 and again.headers["location"] == f"/ui/events/{event_id}"
            )
            requests = run.receiver.wait_count(got + 1)
            assert requests[-1].headers["webhook-id"] == event_id

            # accept the held poll: the catalog's 11 deletions become events
            accepted = browser.post(
                "/ui/sources/catalog/accept", data={"csrf": csrf}, headers=origin
            )
            assert accepted.status_code == 303
            eventually(lambda: len(_event_ids(run, "catalog")) == 11, what="the accepted deletions")

        # scripts: the bearer token, JSON answers
        bearer = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
        polls = len(run.slow.requests)
        poll = httpx.post(base + "/ui/sources/slow/poll", headers=bearer)
        assert poll.status_code == 200 and poll.json()["ok"] is True
        run.slow.wait_count(polls + 1)  # an hourly source, polled now
        knocks = len(run.gone.requests)
        resumed = httpx.post(base + "/ui/listeners/gone/resume", headers=bearer)
        assert resumed.status_code == 200 and "resumed (was paused: " in resumed.json()["message"]
        run.gone.wait_count(knocks + 1)  # the daemon sends to it again (and is told 410 again)
        not_paused = httpx.post(base + "/ui/listeners/hooks/resume", headers=bearer)
        assert not_paused.status_code == 409 and "was not paused" in not_paused.json()["message"]
        unknown = httpx.post(base + "/ui/sources/nope/poll", headers=bearer)
        assert unknown.status_code == 404

        got = len(run.receiver.requests)
        test = httpx.post(base + "/ui/listeners/hooks/send-test", headers=bearer)
        assert test.status_code == 200, test.text
        assert "answered HTTP 204" in test.json()["message"]
        sent = run.receiver.wait_count(got + 1)[-1]
        body = sent.json()
        assert body["key"] == "pollbridge-test" and body["type"] == "item.updated"
        assert verify(
            decode_secret(run.env["HOOK_SECRET"]),
            sent.headers["webhook-id"],
            int(sent.headers["webhook-timestamp"]),
            sent.body,
            sent.headers["webhook-signature"],
            now_s=int(sent.headers["webhook-timestamp"]),
        )
        events = run.cli_json("events", "--limit", "1000")
        assert body["id"] not in {e["id"] for e in events}  # the test event is not recorded

        for path in ("/ui/", "/ui/events", "/ui/deliveries", f"/ui/events/{event_id}"):
            _no_secret(run, httpx.get(base + path).text)
        assert run.daemon.terminate() == 0, run.daemon.output()
        _no_secret(run, run.daemon.output())


def test_without_a_token_the_console_is_read_only(tmp_path, items_api, receiver):
    """No http_token: the pages say read-only and show no action; every action POST is 403,
    whatever credentials it brings."""
    with _run(tmp_path, items_api, receiver, token=False) as run:
        overview = httpx.get(run.base + "/ui/")
        assert overview.status_code == 200 and "read-only" in overview.text
        assert '<form method="post"' not in overview.text
        event_id = _event_ids(run, "orders")[0]
        assert "Replay this event" not in httpx.get(run.base + f"/ui/events/{event_id}").text
        origin = {"Origin": run.base}
        for path in (
            f"/ui/events/{event_id}/replay",
            "/ui/listeners/broken/replay-dead",
            "/ui/listeners/gone/resume",
            "/ui/listeners/hooks/send-test",
            "/ui/sources/catalog/accept",
            "/ui/sources/orders/poll",
        ):
            for headers in (origin, {"Authorization": "Bearer anything"}):
                reply = httpx.post(run.base + path, headers=headers)
                assert reply.status_code == 403, path
                assert "read-only" in reply.text
        login = httpx.post(run.base + "/ui/login", data={"token": ""}, headers=origin)
        assert login.status_code == 403
        assert run.daemon.terminate() == 0, run.daemon.output()


def test_check_warns_of_a_console_open_to_the_network(write_config):
    """`check` (and the daemon at start) warn when [bridge] http is not loopback-only and
    http_token is not set; with a token, or on 127.0.0.1, they do not."""

    def check(bridge: str, *flags: str) -> subprocess.CompletedProcess[str]:
        path = write_config(
            f'[bridge]\n{bridge}\n\n[[sources]]\nname = "idle"\n'
            'url = "https://api.example.com/idle"\ncron = "0 0 1 1 *"\n'
        )
        return run_cli("check", "--config", str(path), *flags)

    open_to_all = check('http = ":9464"')
    assert open_to_all.returncode == 0, open_to_all.stderr
    assert "[bridge], field http: listens on 0.0.0.0" in open_to_all.stdout
    assert "http_token" in check('http = "192.168.7.7:9464"').stdout
    assert check('http = ":9464"', "--strict").returncode == 78
    assert "console-open" in check('http = ":9464"', "--json").stdout
    assert "http listens" not in check('http = "127.0.0.1:9464"').stdout
    assert "field http" not in check('http = ":9464"\nhttp_token = "long-enough-token"').stdout


# -- a real browser ------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
SCREENSHOTS_ENV = "POLLBRIDGE_CONSOLE_SCREENSHOTS"
"""A directory (e.g. ``docs``) to copy the browser test's screenshots into."""


def _chromium(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("needs Debian's chromium and chromium-driver packages")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def _console_errors(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _shoot(browser, path: Path, width: int) -> None:
    # the whole page's height, so a screenshot shows every table
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": max(600, height), "deviceScaleFactor": 1, "mobile": width < 600},
    )
    path.write_bytes(browser.get_screenshot_as_png())


def _fits(browser, width: int) -> None:
    """The page renders at ``width`` without a horizontal scroll bar (tables scroll inside)."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    scroll_width = browser.execute_script("return document.documentElement.scrollWidth")
    wide = browser.execute_script(
        "return [...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > arguments[0]"
        " && !e.parentElement.closest('.scroll'))"
        ".map(e => e.tagName + '.' + e.className + ':' + Math.round(e.getBoundingClientRect().right))"
        ".slice(0, 8)",
        width,
    )
    assert scroll_width <= width, f"{browser.current_url}: {scroll_width} px at {width}: {wide}"


def test_a_browser_finds_a_failed_event_and_replays_it(tmp_path, items_api, receiver):
    """Headless Chromium logs in, goes from the overview to the events and to a failed event,
    and replays it; every page renders at 1280 and 390 px wide with no console error (a CSP
    violation would be one), styled by the console's CSS, with its script running."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    browser = _chromium(tmp_path / "chromium-profile")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with _run(tmp_path, items_api, receiver) as run:
            wait = WebDriverWait(browser, 15)
            browser.get(run.base + "/ui/login?next=/ui/")
            browser.find_element(By.NAME, "token").send_keys(CONSOLE_TOKEN)
            browser.find_element(By.CSS_SELECTOR, "form.login button").click()
            wait.until(expected_conditions.url_to_be(run.base + "/ui/"))
            assert browser.find_element(By.CSS_SELECTOR, 'tr[data-name="broken"]').is_displayed()
            header = browser.find_element(By.CSS_SELECTOR, "header.top")
            assert header.value_of_css_property("background-color") == "rgba(23, 32, 43, 1)"
            assert browser.find_element(By.ID, "auto-refresh").is_displayed()  # the script ran
            browser.find_element(By.ID, "auto-refresh").click()  # no reload mid-test
            _fits(browser, 1280)
            _fits(browser, 390)
            _shoot(browser, shots / "console-overview.png", 1280)
            _shoot(browser, shots / "console-overview-390.png", 390)

            browser.find_element(By.LINK_TEXT, "Events").click()
            wait.until(expected_conditions.title_contains("Events"))
            updated = next(
                row
                for row in browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")
                if "updated" in row.text and "broken: dead" in row.text
            )
            event_id = updated.find_element(By.CSS_SELECTOR, "td a").text
            updated.find_element(By.CSS_SELECTOR, "td a").click()
            wait.until(expected_conditions.title_contains(event_id))
            changed = browser.find_element(By.CSS_SELECTOR, "#fields tr.changed")
            assert "/status" in changed.text
            cell = changed.find_element(By.CSS_SELECTOR, "td")
            assert cell.value_of_css_property("background-color") == "rgba(255, 244, 194, 1)"
            assert "HTTP 500" in browser.find_element(By.ID, "delivery-broken").text
            _fits(browser, 390)
            _shoot(browser, shots / "console-event-390.png", 390)
            _fits(browser, 1280)
            _shoot(browser, shots / "console-event.png", 1280)

            got = len(run.receiver.requests)
            run.broken_fixed.set()
            browser.find_element(By.XPATH, "//button[text()='Replay this event']").click()
            notice = wait.until(
                expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".notice.ok"))
            )
            assert f"{event_id}: queued 3 delivery(ies) again" in notice.text
            replayed = run.receiver.wait_count(got + 1)[-1]
            assert replayed.headers["webhook-id"] == event_id
            run.broken.wait_for(
                lambda rs: any(r.headers.get("webhook-id") == event_id for r in rs[-3:])
            )
            _shoot(browser, shots / "console-replayed.png", 1280)
            assert _console_errors(browser) == []
            assert run.daemon.terminate() == 0, run.daemon.output()
    finally:
        browser.quit()
    for shot in shots.iterdir():
        assert shot.read_bytes().startswith(b"\x89PNG")
    target = os.environ.get(SCREENSHOTS_ENV)
    if target:
        for name in ("console-overview.png", "console-event.png", "console-event-390.png"):
            shutil.copy(shots / name, Path(target) / name)
