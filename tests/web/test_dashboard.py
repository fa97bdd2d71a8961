"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real
Phoenix with a real service and API tokens: sign in once, watch the service's status live,
break it, see the recovery appear and complete, then read its timeline, the history with
its charts, and the playbooks page. Screenshots go to ``test-artifacts/dashboard/``."""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Iterator

import httpx
import pytest

from tests.support import REPO, PhoenixServer, free_port, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "dashboard-viewer-0123456789"
OPERATOR = "dashboard-operator-0123456789"
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (Debian package chromium)"
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("PHOENIX_REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("dashboard")
    config = root / "phoenix.yaml"
    # Starts in about a second (like most real services), so the failure and the recovery
    # last long enough for a person (and this test) to watch them on the page.
    slow_start = (
        '["{python}", "-c", "import runpy, sys, time; time.sleep(1); '
        "sys.argv = ['web'] + sys.argv[1:]; runpy.run_module('examples.services.web', "
        'run_name=\'__main__\')", "--port", "{port}"]'
    )
    entry = web_service_yaml("web", free_port(), interval="1s")
    entry = entry.replace(
        '["{python}", "-m", "examples.services.web", "--port", "{port}", "--name", "{name}"]',
        slow_start,
    )
    assert slow_start in entry
    config.write_text("services:" + entry)
    phoenix = PhoenixServer(
        config,
        root / "var",
        env={"PHOENIX_API_TOKENS": f"viewer:viewer:{TOKEN},ops:operator:{OPERATOR}"},
    ).start()
    phoenix.client.headers["Authorization"] = f"Bearer {TOKEN}"  # the test's own calls
    wait_until(lambda: phoenix.status_of("web") == "healthy", timeout=20)
    yield phoenix
    phoenix.close()


def test_watch_a_failure_and_its_recovery_live(server: PhoenixServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # Record every status the page shows for the service, and every recovery card.
        page.add_init_script(
            """
            window.seen = {statuses: [], recoveries: []};
            new MutationObserver(() => {
              const cell = document.querySelector('tr[data-service="web"] .status');
              if (cell) window.seen.statuses.push(cell.textContent.trim());
              for (const card of document.querySelectorAll('[data-recovery]'))
                window.seen.recoveries.push(card.dataset.recovery);
            }).observe(document, {subtree: true, childList: true, characterData: true});
            """
        )
        page.goto(server.url)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("API token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        status = page.locator('tr[data-service="web"] .status')
        expect(status).to_have_text("healthy", timeout=10_000)
        expect(page.locator("#who")).to_contain_text("viewer (viewer)")
        page.screenshot(path=str(ARTIFACTS / "1-overview.png"), full_page=True)
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert (
            cookies["phoenix_session"]["httpOnly"]
            and cookies["phoenix_session"]["sameSite"] == "Strict"
        )
        assert TOKEN not in str(page.context.cookies())

        # Break it: its health check fails; Phoenix notices and restarts it.
        port = server.instance_port("web")
        httpx.post(f"http://127.0.0.1:{port}/admin/health", json={"fail": True})
        expect(status).not_to_have_text("healthy", timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "2-failing.png"), full_page=True)
        expect(status).to_have_text("healthy", timeout=30_000)
        seen = page.evaluate("window.seen")
        assert "unhealthy" in seen["statuses"], seen["statuses"]
        assert seen["recoveries"], "a running recovery was shown"
        recovery_id = seen["recoveries"][0]

        # Its page: timeline, decision, incident evidence.
        page.goto(f"{server.url}/#/recovery/{recovery_id}")
        expect(page.get_by_role("heading", name=f"Recovery {recovery_id}")).to_contain_text(
            "completed", timeout=15_000
        )
        timeline = page.locator("#timeline tbody tr")
        expect(timeline).to_have_count(4)
        expect(timeline.first).to_contain_text("Graceful shutdown")
        expect(page.locator("main")).to_contain_text("default table")
        page.screenshot(path=str(ARTIFACTS / "3-recovery.png"), full_page=True)

        # History with filters and charts people would rather look at than read.
        page.get_by_role("link", name="History").click()
        expect(page.locator("#history tbody tr")).to_have_count(1)
        expect(page.locator(".charts svg")).to_have_count(4)
        page.locator("#filters select[name=strategy]").select_option("failover")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#history tbody tr")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "4-history.png"), full_page=True)

        # Playbooks: validate one (a viewer may: it acts on nothing).
        page.get_by_role("link", name="Playbooks").click()
        page.get_by_role("button", name="Validate").click()
        expect(page.locator("#validate-result")).to_contain_text("Valid.")
        page.screenshot(path=str(ARTIFACTS / "5-playbooks.png"), full_page=True)

        # Accessible: every control is labelled, and the keyboard reaches the navigation.
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input, select, textarea, button')]
               .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                            && !e.textContent.trim()).length"""
        )
        assert unlabelled == 0
        page.locator("header h1 a").focus()
        page.keyboard.press("Shift+Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Overview"
        page.keyboard.press("Enter")
        expect(status).to_have_text("healthy")

        # Signing out ends the session: the stream and the API refuse it from then on.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        browser.close()


def test_the_stream_and_pages_need_a_session_or_a_token(server: PhoenixServer) -> None:
    with httpx.Client(base_url=server.url) as anyone:
        assert anyone.get("/").status_code == 200, "the page itself is public"
        assert anyone.get("/static/app.js").status_code == 200
        assert anyone.get("/static/nope.js").status_code == 404
        assert anyone.get("/api/stream").status_code == 401
        refused = anyone.post("/api/session", json={"token": "wrong-token-0123456789"})
        assert refused.status_code == 401 and "not valid" in refused.json()["error"]["message"]
        signed = anyone.post("/api/session", json={"token": TOKEN})
        assert signed.status_code == 200 and signed.json()["role"] == "viewer"
    session = signed.cookies["phoenix_session"]
    assert TOKEN not in session
    with httpx.Client(base_url=server.url, cookies={"phoenix_session": session}) as browser:
        with browser.stream("GET", "/api/stream") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            assert next(events.iter_lines()) == "event: snapshot"
        # The session carries the viewer role, no more.
        trigger = browser.post("/api/recovery/trigger", json={"service": "web"})
        assert trigger.status_code == 403
        browser.delete("/api/session")
        ended = browser.get("/api/services")
        assert ended.status_code == 401 and "sign in again" in ended.json()["error"]["message"]


def test_a_series_that_was_news_shows_its_scores_and_why(server: PhoenixServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    # A queue that sat near 40 for 600 samples, then 400: news, one in a million or rarer.
    rng = random.Random(7)
    calm = [rng.gauss(40.0, 1.0) for _ in range(600)]
    samples = [{"metric": "queue_depth", "value": value} for value in [*calm, 400.0]]
    pushed = server.post(
        "/api/metrics",
        json={"service": "web", "samples": samples},
        headers={"Authorization": f"Bearer {OPERATOR}"},
    )
    assert pushed.status_code == 202, pushed.text
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url)
        page.get_by_label("API token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        spark = page.locator('tr[data-service="web"] .anomalies svg[role="img"]')
        expect(spark).to_have_count(1, timeout=10_000)
        label = spark.get_attribute("aria-label") or ""
        assert label.startswith("queue_depth: anomaly score over the last 15 minutes, peak 1.00")
        assert "latest news 400 scored 1.00" in label, label
        usual = re.search(r"usually (\S+) to (\S+)$", label)
        assert usual is not None, label
        low, high = map(float, usual.groups())
        assert 37.0 < low < 39.0 and 41.0 < high < 43.0, "40 +- 2.33 sd: the middle 98 %"
        page.screenshot(path=str(ARTIFACTS / "6-anomaly.png"), full_page=True)
        browser.close()
