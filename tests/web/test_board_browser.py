"""The board and the deliveries page in a real browser (headless Chromium through Playwright):
the live pill says "connecting…", never "offline", before the stream opens and "live" after;
search and filters are used by their labels and the keyboard; the CI, verdict and status chips
carry text with enough contrast; "Older" pages on.

Chromium comes from Debian's ``chromium`` package. Without it the test is skipped, except
under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from bot import ci
from bot.config import Settings
from bot.store.base import Delivery, DeliveryState
from bot.store.factory import open_store
from bot.tasks.model import utcnow
from bot.web.events import EventStreamOptions
from bot.web.routes import WebOptions, add_web_routes
from tests.web import browser
from tests.web.conftest import move

chromium = browser.chromium  # the fixture: the system Chromium, or skip (fail under CI=true)

playwright_api = pytest.importorskip("playwright.async_api")

OPTIONS = WebOptions(events=EventStreamOptions(poll_interval_s=0.05, keepalive_s=0.5, lifetime_s=30.0, retry_ms=500))
SHA = "c0ffee" + "0" * 34

# The WCAG contrast ratio of an element's text on its own background (both rgb()).
CONTRAST_JS = """(el) => {
  const rgb = (s) => s.match(/[0-9.]+/g).slice(0, 3).map(Number);
  const lum = (c) => { const [r, g, b] = c.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92
    : Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const st = getComputedStyle(el);
  const a = lum(rgb(st.color)), b = lum(rgb(st.backgroundColor));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""




@pytest.fixture
async def served(tmp_path: Path, seeder):
    store = await open_store(f"sqlite:///{tmp_path / 'web.db'}")
    await store.migrate()
    now = utcnow()
    seeded = await seeder(store, now)
    review = await move(store, seeded.hostile, head_sha=SHA)
    await store.record_fact(ci.ci_fact(ci.PASSED_FACT, review.repo, SHA))
    await store.record_delivery(
        Delivery(id="echo-1", event="issue_comment", action="edited", repo="octo/widgets", installation_id=1,
                 payload=json.dumps({"sender": {"login": "patchwright[bot]"}}).encode(), received_at=now,
                 sender="patchwright[bot]")
    )
    await store.finish_delivery("echo-1", state=DeliveryState.DONE, outcome="c.h: ignored: own", ignore_reason="own")
    app = web.Application()
    add_web_routes(app, store=store, settings=Settings(), options=OPTIONS)
    try:
        async with browser.serve(app) as base:
            yield seeded, base
    finally:
        await store.close()


async def test_board_and_deliveries_in_a_browser(chromium, served):
    seeded, base = served
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            # First paint, with the event stream held back: the pill must not say "offline".
            await page.route("**/api/events", lambda route: None)
            await page.goto(base + "/")
            assert await page.locator("#live").inner_text() == "connecting…"
            await page.unroute("**/api/events")
            await page.goto(base + "/")
            await page.wait_for_function("() => document.getElementById('live').textContent === 'live'", timeout=5000)
            # dashboard.js swaps the content in once connected: check the swapped-in elements
            await page.wait_for_function("() => document.body.hasAttribute('data-refreshed')", timeout=5000)

            chip = page.locator(f'tr[data-task-id="{seeded.hostile.id}"] .ci')
            assert await chip.inner_text() == "CI passing"
            for element in [chip, *(await page.locator(".badge").all())]:
                assert await element.evaluate(CONTRAST_JS) >= 4.5, await element.inner_text()

            search = page.get_by_label("Search tasks")
            await search.fill("flaky")
            await search.press("Enter")
            await page.wait_for_url("**q=flaky**")
            rows = page.locator("tr[data-task-id]")
            assert await rows.count() == 1 and await rows.first.get_attribute("data-task-id") == seeded.failed.id

            await page.goto(base + "/?limit=1")
            await page.get_by_role("link", name="Older tasks →").click()
            await page.wait_for_url("**before=**")
            assert await page.locator("tr[data-task-id]").count() == 1

            await page.goto(base + "/deliveries")
            assert await page.locator("tr[data-delivery-id]").count() == 3  # the bot's echo is folded
            await page.get_by_role("link", name="show 1 from bots").click()
            await page.wait_for_url("**bots=1**")
            assert await page.locator('tr[data-delivery-id="echo-1"]').count() == 1
            await page.get_by_label("Outcome").select_option("failed")
            await page.get_by_role("button", name="Filter").press("Enter")  # by keyboard
            await page.wait_for_url("**verdict=failed**")
            assert [await r.get_attribute("data-delivery-id") for r in await page.locator("tr[data-delivery-id]").all()] == ["d-3"]
            await page.wait_for_function("() => document.body.hasAttribute('data-refreshed')", timeout=5000)
            for element in await page.locator(".badge").all():
                assert await element.evaluate(CONTRAST_JS) >= 4.5, await element.inner_text()

            await page.goto(base + "/deliveries/d-1")  # no admin token: no payload, a pointer instead
            assert await page.locator("pre.payload").count() == 0
            assert "admin token" in await page.locator(".payload-hidden").inner_text()
        finally:
            await browser.close()
