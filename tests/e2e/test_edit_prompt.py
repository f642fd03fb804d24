"""Editing a paused task's input changes what the next attempt's prompt contains (issue 16,
acceptance criterion 2): a real worker pool runs the fake agent, which records the prompt
file the worker wrote for each attempt. The task is stopped while its agent runs, edited from
the dashboard's form, then through ``PATCH /api/tasks/{id}``, then with ``patchwright tasks
edit``, and resumed each time; an edit in any other status answers 409 naming it, and the
audit trail records who edited what."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot import admin
from bot.__main__ import _parser as cli_parser
from bot.tasks.model import Status
from bot.web.actions import csrf_token
from bot.web.routes import add_web_routes

pytestmark = pytest.mark.slow

TOKEN = "adm-e2e-edit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def waiting_attempt(n: int) -> list[dict]:
    """The fake agent's steps for attempt ``n``: say it started, wait for the test's go."""
    return [{"touch": f"{{out}}/started-{n}"}, {"wait_for": f"{{out}}/go-{n}", "timeout": 60}]


SCRIPT = {
    "1": waiting_attempt(1),
    "2": waiting_attempt(2),
    "3": waiting_attempt(3),
    "4": [{"write": {"src/app.py": "def greet(name):\n    return 'hello ' + name\n"}}, {"done": "Greets with hello."}],
}


async def start_web(e2e) -> str:
    """The dashboard and API over the harness's store and services (with GitHub)."""
    e2e.use_settings(admin_token=SecretStr(TOKEN))
    app = web.Application()
    add_web_routes(app, store=e2e.store, settings=e2e.settings, services=lambda: e2e.services)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    e2e._cleanups.append(runner.cleanup)
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


async def stop_when_running(e2e, session: aiohttp.ClientSession, base: str, task_id: str, attempt: int) -> None:
    """Once attempt ``attempt``'s agent runs: a PATCH is refused (409, running), then stop it."""
    await e2e.wait_until(lambda: (e2e.agent_out / f"started-{attempt}").exists(), what=f"attempt {attempt} started")
    async with session.patch(f"{base}/api/tasks/{task_id}", json={"spec": "no"}, headers=AUTH) as resp:
        assert resp.status == 409 and (await resp.json())["status"] == "running"
    async with session.post(f"{base}/api/tasks/{task_id}/stop", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    await e2e.wait_for(task_id, lambda t: t.status is Status.PAUSED and t.attempt == attempt + 1)


async def resume(session: aiohttp.ClientSession, base: str, task_id: str) -> None:
    async with session.post(f"{base}/api/tasks/{task_id}/resume", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()


def prompt_tail(e2e, attempt: int) -> str:
    return e2e.agent_run(attempt)["prompt"]


async def test_edits_from_page_api_and_cli_reach_the_next_prompt(e2e):
    repo = await e2e.add_repo("demo", script=SCRIPT)
    issue = await e2e.open_issue(repo, "Greet with hello", "ORIGINAL-SPEC: make it say hello.")
    task = await e2e.create_task(repo, issue)
    base = await start_web(e2e)
    await e2e.start_pool()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:  # 127.0.0.1
        await stop_when_running(e2e, session, base, task.id, 1)
        assert "ORIGINAL-SPEC" in prompt_tail(e2e, 1)

        # 1. the dashboard's edit form (logged in, with the CSRF field), then resume
        async with session.post(f"{base}/login", data={"token": TOKEN, "next": "/"}, allow_redirects=False) as resp:
            assert resp.status == 303
        form = {"csrf": csrf_token(TOKEN), "spec": "PAGE-SPEC: say hello.", "instructions": "PAGE-INSTRUCTIONS"}
        async with session.post(f"{base}/tasks/{task.id}/edit", data=form, allow_redirects=False) as resp:
            assert resp.status == 303
        await resume(session, base, task.id)
        await stop_when_running(e2e, session, base, task.id, 2)
        second = prompt_tail(e2e, 2)
        assert "PAGE-SPEC: say hello." in second and "PAGE-INSTRUCTIONS" in second
        assert "ORIGINAL-SPEC" not in second

        # 2. the API
        body = {"spec": "API-SPEC: say hello loudly.", "instructions": "API-INSTRUCTIONS"}
        async with session.patch(f"{base}/api/tasks/{task.id}", json=body, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
        await resume(session, base, task.id)
        await stop_when_running(e2e, session, base, task.id, 3)
        third = prompt_tail(e2e, 3)
        assert "API-SPEC: say hello loudly." in third and "API-INSTRUCTIONS" in third
        assert "PAGE-SPEC" not in third and "PAGE-INSTRUCTIONS" not in third

        # 3. the command line (parsed and run as `patchwright tasks edit` does, in this process:
        # another process would share the SQLite file with the running pool)
        spec_file = e2e.tmp_path / "spec.md"
        spec_file.write_text("CLI-SPEC: say hello, then a newline.\n")
        args = cli_parser().parse_args(
            ["tasks", "edit", task.id, "--spec-file", str(spec_file), "--instructions", "CLI-INSTRUCTIONS"]
        )
        printed: list[str] = []
        await admin.run(args, e2e.store, settings=e2e.settings, services=e2e.services, write=printed.append)
        assert printed and "input edited" in printed[0]
        await resume(session, base, task.id)
        review = await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW and t.attempt == 4)
        fourth = prompt_tail(e2e, 4)
        assert "CLI-SPEC: say hello, then a newline." in fourth and "CLI-INSTRUCTIONS" in fourth
        assert "API-SPEC" not in fourth and "API-INSTRUCTIONS" not in fourth

        # in review (and any status but paused) an edit answers 409 naming the status
        async with session.patch(f"{base}/api/tasks/{task.id}", json={"instructions": "x"}, headers=AUTH) as resp:
            assert resp.status == 409 and (await resp.json())["status"] == "review"
        assert (await e2e.store.get_task(task.id)).retry_context == review.retry_context

    edits = [ev for ev in await e2e.store.list_events(task.id) if ev.reason.startswith("Input edited by")]
    assert [ev.actor for ev in edits] == ["dashboard", "api", "cli"]
    for ev in edits:
        assert {"spec", "retry_context"} <= set(ev.changes)
        assert "the issue text (" in ev.reason and "the instructions (" in ev.reason
