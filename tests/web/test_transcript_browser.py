"""The task page's transcript in a real browser (headless Chromium through Playwright): a
running task's log is followed live — a batch stored while the page is open is in the DOM
within a second, also after dashboard.js swapped the page's content — and the search box
filters the entries and marks the matches.

Chromium comes from Debian's ``chromium`` package. Without it the test is skipped, except
under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from aiohttp import web

from bot.config import Settings
from bot.store.base import Attempt
from bot.store.factory import open_store
from bot.tasks.model import RetryKind, Status, utcnow
from bot.web.events import EventStreamOptions
from bot.web.routes import WebOptions, add_web_routes
from tests.web import browser
from tests.web.conftest import make_task, move

chromium = browser.chromium  # the fixture: the system Chromium, or skip (fail under CI=true)

playwright_api = pytest.importorskip("playwright.async_api")

FIXTURES = Path(__file__).parents[1] / "agents" / "fixtures" / "transcripts"
OPTIONS = WebOptions(events=EventStreamOptions(poll_interval_s=0.05, keepalive_s=0.5, lifetime_s=30.0, retry_ms=500))




@pytest.fixture
async def served(tmp_path: Path):
    """A served store holding a running Claude task whose log has the recorded run's first lines."""
    store = await open_store(f"sqlite:///{tmp_path / 'web.db'}")
    await store.migrate()
    now = utcnow()
    task, _ = await store.create_task(make_task("task_01live", "octo/widgets", 5, "Greet with hello", now))
    task = await move(store, task, status=Status.RUNNING, attempt=1, agent="claude")
    await store.start_attempt(Attempt(task_id=task.id, number=1, kind=RetryKind.FIRST, started_at=now))
    await store.append_logs(task.id, 1, (FIXTURES / "claude.log").read_text().splitlines()[:9])
    app = web.Application()
    add_web_routes(app, store=store, settings=Settings(), options=OPTIONS)
    try:
        async with browser.serve(app) as base:
            yield store, task, base
    finally:
        await store.close()


def message(text: str) -> str:
    return json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}})


async def appears_within(page, store, task_id: str, text: str) -> float:
    """Store a batch with a message ``text``; seconds until the page shows it."""
    started = time.monotonic()
    await store.append_logs(task_id, 1, [message(text)])
    await page.locator("ol.transcript li.k-message", has_text=text).wait_for(timeout=5000)
    return time.monotonic() - started


async def test_live_follow_and_search_in_chromium(chromium, served) -> None:
    store, task, base = served
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{base}/tasks/{task.id}")
            # following; and dashboard.js's first refresh (when its own stream opens) is done
            await page.wait_for_selector('body[data-following="1"][data-refreshed]', timeout=5000)
            assert await page.locator("ol.transcript li.entry").count() == 9
            assert await page.locator("li.k-tool_call .tool-name").all_inner_texts() == ["Read", "Write"]

            # a new line is in the DOM within a second
            assert await appears_within(page, store, task.id, "Now running the tests.") < 1.0

            # search: entries without the text hide, matches are marked, folded parts open
            search = page.get_by_label("Search the logs")
            await search.focus()
            await page.keyboard.type("greet-with-HELLO")
            shown = page.locator("ol.transcript li.entry:not([hidden])")
            assert await shown.count() == 2  # the worker's checkout notes (case-insensitive)
            assert await page.locator("mark.hit").all_inner_texts() == ["greet-with-hello"] * 2
            assert "2 entries match" in await page.locator(".log-search output").inner_text()
            await search.fill("'hello ' + name")  # inside the folded arguments of the Write call
            assert await shown.count() == 1 and await page.locator("li.k-tool_call details[open]").count() == 1
            assert "1 entry matches" in await page.locator(".log-search output").inner_text()

            # dashboard.js swaps <main> when the task changes: the search and the follow survive
            refreshed = await page.evaluate("document.body.dataset.refreshed")
            await move(store, await store.get_task(task.id), status=Status.RUNNING, cost_usd=0.02)
            await page.locator(f'body:not([data-refreshed="{refreshed}"])').wait_for(timeout=5000)
            assert await search.input_value() == "'hello ' + name"
            assert await shown.count() == 1  # the filter applies to the new content
            assert await page.evaluate("document.activeElement && document.activeElement.id") == "log-search"
            await search.fill("")
            assert await appears_within(page, store, task.id, "Tests pass.") < 1.0
            texts = await page.locator("ol.transcript li.k-message").all_inner_texts()
            assert sum("Now running the tests." in t for t in texts) == 1  # not appended twice
            assert await page.locator("ol.transcript li.entry:not([hidden])").count() == 11
            assert errors == []
        finally:
            await browser.close()
