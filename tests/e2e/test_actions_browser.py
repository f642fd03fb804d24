"""The dashboard's actions in a real browser (issue 16, acceptance criterion 1): headless
Chromium through Playwright, the dashboard and API over the end-to-end harness (emulator,
store, a worker pool running the fake agent).

- Retry a failed task from its page (the Retry button focused and pressed with Enter) and
  watch its status badge go pending → running → review live, without a reload.
- Stop a running task from its page.
- A refused action (the page was out of date) shows the rule's reason, the API's 409 text.
- Without the token: no buttons, a "Log in to act" link; forged posts are refused and
  nothing changes.
- Accessibility basics: every field of the actions has a label; the buttons are reached
  and pressed by keyboard.

Chromium is the system's (Debian's ``chromium``); without it the tests are skipped, except
under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.store.base import TaskEvent
from bot.tasks.model import Status, Task
from bot.web.actions import csrf_token
from bot.web.events import EventStreamOptions
from bot.web.routes import WebOptions, add_web_routes
from tests.web import browser

chromium = browser.chromium  # the fixture: the system Chromium, or skip (fail under CI=true)

pytestmark = pytest.mark.slow

TOKEN = "adm-e2e-browser-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIVE = WebOptions(events=EventStreamOptions(poll_interval_s=0.05, keepalive_s=0.5, lifetime_s=30.0, retry_ms=300))
STATUS_BADGE = "#content dl.facts .badge"  # the task page's status (the first fact)
TIMEOUT_MS = 30_000





@dataclass
class Console:
    base: str
    browser: object


@pytest.fixture
async def console(e2e, chromium) -> AsyncIterator[Console]:
    """The dashboard over the harness (admin token set) and a headless Chromium."""
    e2e.use_settings(admin_token=SecretStr(TOKEN))
    app = web.Application()
    add_web_routes(app, store=e2e.store, settings=e2e.settings, options=LIVE, services=lambda: e2e.services)
    async with browser.serve(app) as base, browser.launch_chromium(chromium) as launched:
        yield Console(base, launched)


async def logged_in_page(console: Console, path: str):
    """A page of a new browser context, logged in through the login form, at ``path``."""
    context = await console.browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{console.base}/login?next={path}")
    await page.fill('input[name="token"]', TOKEN)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert page.url == f"{console.base}{path}"
    return page


async def failed_task(e2e, repo: str, title: str) -> Task:
    issue = await e2e.open_issue(repo, title, "Make the greeting say hello.")
    task = await e2e.create_task(repo, issue)
    failed = await e2e.store.transition(
        task.id, from_statuses=[Status.PENDING],
        changes={"status": Status.FAILED, "close_reason": "tests failed", "retry_reason": "Merge conflict"},
        event=TaskEvent(task_id=task.id, kind="transition", reason="tests failed", actor="test",
                        from_status=Status.PENDING, to_status=Status.FAILED),
    )
    assert failed is not None
    return failed


async def badge(page) -> str:
    return (await page.inner_text(STATUS_BADGE)).strip()


async def wait_for_badge(page, status: str) -> None:
    await page.wait_for_function(
        "([sel, want]) => { const b = document.querySelector(sel); return b && b.textContent.trim() === want; }",
        arg=[STATUS_BADGE, status], timeout=TIMEOUT_MS,
    )


async def unlabelled_fields(page) -> list[str]:
    """Fields of the actions section without a label (hidden fields need none)."""
    return await page.evaluate(
        """() => Array.from(document.querySelectorAll('section.actions input, section.actions textarea'))
            .filter(el => el.type !== 'hidden' && el.labels.length === 0 && !el.getAttribute('aria-label'))
            .map(el => el.outerHTML)"""
    )


SCRIPT = {
    "manual": [
        {"touch": "{out}/manual-started"},
        {"wait_for": "{out}/manual-go", "timeout": 60},
        {"write": {"src/app.py": "def greet(name):\n    return 'hello ' + name\n"}},
        {"done": "Greets with hello."},
    ],
    "first": [{"touch": "{out}/first-started"}, {"wait_for": "{out}/never", "timeout": 120}],
}


async def test_retry_from_the_page_then_watch_it_go_pending_running_review_live(e2e, console):
    repo = await e2e.add_repo("demo", script=SCRIPT)
    task = await failed_task(e2e, repo, "Greet with hello")
    page = await logged_in_page(console, f"/tasks/{task.id}")
    await page.wait_for_selector("body[data-live='1']")
    assert await badge(page) == "failed"
    assert await unlabelled_fields(page) == []
    assert await page.locator("form[data-verb='stop']").count() == 0  # not offered to a failed task

    await page.fill("#retry-instructions", "Keep the old greeting's tests.")
    await page.focus("form[data-verb='retry'] button")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert (await page.inner_text(".notice")).startswith("Retry requested by the dashboard: attempt 2 of")
    assert await badge(page) == "pending"
    await page.wait_for_selector("body[data-live='1']")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    await e2e.start_pool()
    await wait_for_badge(page, "running")
    await e2e.wait_until(lambda: (e2e.agent_out / "manual-started").exists(), what="the retry's agent started")
    assert await page.locator("form[data-verb='stop']").count() == 1  # the buttons follow the status
    (e2e.agent_out / "manual-go").touch()
    await wait_for_badge(page, "review")
    assert navigations == []  # live: no reload, no navigation
    assert "Keep the old greeting's tests." in e2e.agent_run(2)["prompt"]
    row = await e2e.store.get_task(task.id)
    assert row.status is Status.REVIEW and row.pr_number is not None


async def test_stop_a_running_task_from_the_page(e2e, console):
    repo = await e2e.add_repo("demo", script=SCRIPT)
    issue = await e2e.open_issue(repo, "Greet with hello", "Make the greeting say hello.")
    task = await e2e.create_task(repo, issue)
    await e2e.start_pool()
    await e2e.wait_until(lambda: (e2e.agent_out / "first-started").exists(), what="the agent started")
    page = await logged_in_page(console, f"/tasks/{task.id}")
    assert await badge(page) == "running"
    assert await page.locator("form[data-verb='retry']").count() == 0

    await page.focus("form[data-verb='stop'] button")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert (await page.inner_text(".notice")).strip() == "Paused by the dashboard."
    await wait_for_badge(page, "paused")
    stopped = await e2e.wait_for(task.id, lambda t: t.status is Status.PAUSED and t.worker_id == "")
    assert stopped.attempt == 2  # attempt 1 is over; a resume runs attempt 2
    for _ in range(600):  # the agent was stopped: its attempt is finished (within 30 s)
        attempts = await e2e.store.list_attempts(task.id)
        if attempts and attempts[0].finished_at is not None:
            break
        await asyncio.sleep(0.05)
    assert [a.number for a in attempts] == [1] and attempts[0].finished_at is not None
    # paused: the input editor is offered, with labelled fields
    assert await page.locator("form.edit").count() == 1 and await unlabelled_fields(page) == []


async def test_a_refused_action_shows_the_rules_reason(e2e, console):
    repo = await e2e.add_repo("demo", script=SCRIPT)
    task = await failed_task(e2e, repo, "Greet with hello")
    page = await logged_in_page(console, f"/tasks/{task.id}")
    await page.route("**/api/events", lambda route: route.abort())  # the page stays as it was loaded
    await page.reload()
    async with aiohttp.ClientSession() as session, session.post(
        f"{console.base}/api/tasks/{task.id}/cancel", headers=AUTH
    ) as resp:
        assert resp.status == 200
    assert await badge(page) == "failed"  # out of date: it still offers Retry

    async with page.expect_navigation():
        await page.click("form[data-verb='retry'] button")
    shown = (await page.inner_text(".notice")).strip()
    async with aiohttp.ClientSession() as session, session.post(
        f"{console.base}/api/tasks/{task.id}/retry", headers=AUTH
    ) as resp:
        assert resp.status == 409
        refusal = (await resp.json())["error"]
    assert shown == refusal and refusal.startswith("Cannot retry: this task is closed.")
    assert await page.get_attribute(".notice", "role") == "alert"
    assert (await e2e.store.get_task(task.id)).status is Status.CLOSED


async def test_without_the_token_the_actions_are_refused(e2e, console):
    repo = await e2e.add_repo("demo", script=SCRIPT)
    task = await failed_task(e2e, repo, "Greet with hello")
    context = await console.browser.new_context()
    page = await context.new_page()
    await page.goto(f"{console.base}/tasks/{task.id}")
    assert await page.locator("section.actions form").count() == 0
    assert await page.inner_text("section.actions a") == "Log in to act"

    forged = await context.request.post(
        f"{console.base}/tasks/{task.id}/retry", form={"csrf": csrf_token(TOKEN)}, max_redirects=0
    )
    assert forged.status == 401
    api = await context.request.post(f"{console.base}/api/tasks/{task.id}/retry")
    assert api.status == 401

    logged = await logged_in_page(console, f"/tasks/{task.id}")
    no_csrf = await logged.context.request.post(f"{console.base}/tasks/{task.id}/retry", form={}, max_redirects=0)
    assert no_csrf.status == 403
    cookie_only_api = await logged.context.request.post(f"{console.base}/api/tasks/{task.id}/retry")
    assert cookie_only_api.status == 401  # the API wants the bearer token, not the cookie

    row = await e2e.store.get_task(task.id)
    assert row.status is Status.FAILED and [e.actor for e in await e2e.store.list_events(task.id)][-1] == "test"
