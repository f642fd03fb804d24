"""The dashboard in a real browser (headless Chromium through Playwright): it renders, runs
its script, follows the live event stream, and its DOM shows the tasks (moved live) with
hostile text escaped; a screenshot checks that it paints.

Every wait is for a condition (the stream connected, a row in its new group), with a timeout;
none is a fixed sleep. Chromium comes from Debian's ``chromium`` package. Without it the test
is skipped, except under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.config import Settings
from bot.store.factory import open_store
from bot.tasks.model import utcnow
from bot.web.events import EventStreamOptions
from bot.web.routes import TASK_FEED_KEY, WebOptions, add_web_routes
from tests.web import browser
from tests.web.browser import launch_chromium

chromium = browser.chromium  # the fixture: the system Chromium, or skip (fail under CI=true)

LIVE_OPTIONS = WebOptions(
    events=EventStreamOptions(poll_interval_s=0.05, keepalive_s=0.5, lifetime_s=30.0, retry_ms=500)
)
TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1280, "height": 800}
LIVE = 'body[data-live="1"]'


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def sections(dom: str) -> dict[str, str]:
    """The board's status groups: status -> the group's HTML."""
    found = re.findall(r'<section class="group" id="status-\w+" data-status="(\w+)">(.*?)</section>', dom, re.DOTALL)
    return dict(found)


@pytest.fixture
async def live_server(tmp_path: Path, seeder, admin_token):
    store = await open_store(f"sqlite:///{tmp_path / 'web.db'}")
    await store.migrate()
    seeded = await seeder(store, utcnow())
    app = web.Application()
    add_web_routes(app, store=store, settings=Settings(admin_token=admin_token), options=LIVE_OPTIONS)
    try:
        async with browser.serve(app) as base:
            yield app, base, seeded, admin_token
    finally:
        await store.close()


async def stop_task(app: web.Application, base: str, task_id: str, token: str) -> int:
    """Stop a task through the API (the page's event stream is already subscribed)."""
    assert app[TASK_FEED_KEY].subscriber_count >= 1
    async with aiohttp.ClientSession() as session, session.post(
        f"{base}/api/tasks/{task_id}/stop", headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as resp:
        return resp.status


async def test_dashboard_renders_live_in_chromium(chromium, live_server):
    app, base, seeded, token = live_server
    async with launch_chromium(chromium) as browser:
        page = await browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(f"{base}/")
        await page.wait_for_selector(LIVE, state="attached")  # the script connected to /api/events
        assert await page.locator(f'#status-pending tr[data-task-id="{seeded.pending.id}"]').count() == 1

        assert await stop_task(app, base, seeded.pending.id, token) == 200
        # A live task event arrives, and the refreshed content shows the task in its new group.
        await page.wait_for_function(
            "() => Number(document.body.getAttribute('data-events') || 0) >= 1", timeout=TIMEOUT_MS
        )
        await page.wait_for_selector(f'#status-paused tr[data-task-id="{seeded.pending.id}"]', state="attached")
        await page.wait_for_selector("#status-pending", state="detached")
        dom = await page.content()

    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:500]
    assert 'data-live="1"' in body.group(0), body.group(0)
    events = re.search(r'data-events="(\d+)"', body.group(0))
    assert events is not None and int(events.group(1)) >= 1, body.group(0)

    groups = sections(dom)
    assert seeded.pending.id in groups.get("paused", ""), groups.keys()  # moved live from pending
    assert "pending" not in groups
    assert seeded.failed.id in groups["failed"] and "Fix the flaky parser" in groups["failed"]
    assert seeded.hostile.id in groups["review"]
    assert "$1.50" in groups["failed"] and "2/5" in groups["failed"]
    assert 'href="https://github.com/octo/widgets/pull/12"' in groups["failed"]
    assert 'href="https://github.com/octo/widgets/issues/7"' in groups["failed"]
    # The hostile title is text, not markup; its javascript: PR link is not a link.
    assert "&lt;script&gt;alert" in groups["review"]
    assert "<script>alert" not in dom
    assert "javascript:" not in dom


async def test_dashboard_screenshot(chromium, live_server, tmp_path):
    _app, base, seeded, _token = live_server
    shot = tmp_path / "dashboard.png"
    async with launch_chromium(chromium) as browser:
        page = await browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(f"{base}/", wait_until="load")
        await page.wait_for_selector(LIVE, state="attached")
        # Connecting swaps the content in once (a catch-up refresh): shoot the settled page.
        await page.wait_for_selector("body[data-refreshed]", state="attached")
        await page.wait_for_selector(f'tr[data-task-id="{seeded.failed.id}"]')  # visible
        await page.evaluate("() => document.fonts.ready.then(() => true)")
        await page.screenshot(path=str(shot), timeout=TIMEOUT_MS)
    data = shot.read_bytes()
    assert png_size(data) == (1280, 800)
    assert len(data) > 15_000  # a blank page compresses to a few kilobytes
    copy_to = os.environ.get("PATCHWRIGHT_SCREENSHOT_DIR")
    if copy_to:
        shutil.copy(shot, Path(copy_to) / "dashboard.png")
