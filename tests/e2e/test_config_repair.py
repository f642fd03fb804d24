"""The repository-config repair loop as a new user walks it, through the real ingress,
dispatcher, handlers and workers (issue 14): a typo in ``.github/patchwright.yml`` is
reported once although the issue's ``opened`` and ``labeled`` events both meet it; the fix
is pushed to the default branch; ``@patchwright retry`` on the issue starts the task at once
with the fixed config, and the agent opens the pull request."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from bot import messages
from bot.store.base import DeliveryState
from bot.tasks.model import Status

pytestmark = pytest.mark.slow

SCRIPT = {
    "first": [
        {"write": {"src/app.py": "def greet(name):\n    return 'hello ' + name\n"}},
        {"done": "Changed the greeting to hello."},
    ],
}
#: The typo a new user makes: ``max_atempts`` is no setting.
TYPO_CONFIG = {"agent": {"timeout_minutes": 1}, "budget": {"max_atempts": 4}}
FIXED_CONFIG = {"agent": {"timeout_minutes": 1}, "budget": {"max_attempts": 4, "max_cost_usd": 2.5}}
REPORT_START = messages.CONFIG_INVALID_MARKER.split("{", 1)[0]


async def settle(e2e, *, at_least: int, timeout: float = 30.0) -> None:
    """Wait until the emulator sent its webhooks and the dispatcher handled them all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await e2e.emulator.idle()
        rows = await e2e.store.list_deliveries(limit=10_000)
        busy = [d for d in rows if d.state in (DeliveryState.PENDING, DeliveryState.PROCESSING)]
        if len(rows) >= at_least and not busy:
            return
        if loop.time() > deadline:
            raise AssertionError(f"deliveries did not settle: {[(d.event, d.action, d.state.value) for d in rows]}")
        await asyncio.sleep(0.05)


def reports(e2e, repo: str, issue: int) -> list[str]:
    return [body for body in e2e.comments(repo, issue) if body.startswith(REPORT_START)]


async def test_a_typo_is_reported_once_and_retry_after_the_fix_starts_the_task(e2e):
    repo = await e2e.add_repo("demo", script=SCRIPT, config=TYPO_CONFIG)
    await e2e.serve()
    await e2e.start_pool()

    # The issue is opened with the label: GitHub sends issues.opened, then issues.labeled.
    issue = await e2e.open_issue(repo, "Greet with hello", "Say hello.", labels=("patchwright",))
    await settle(e2e, at_least=2)
    assert await e2e.store.get_task_by_issue(repo, issue) is None
    [report] = reports(e2e, repo, issue)
    assert "max_atempts" in report

    # The fix goes to the default branch, then the user asks again.
    await e2e.emulator.push_commit(
        repo,
        branch="main",
        files={".github/patchwright.yml": yaml.safe_dump(FIXED_CONFIG)},
        message="Fix the patchwright config",
        user="alice",
    )
    await settle(e2e, at_least=3)
    await e2e.emulator.comment_on(repo, issue, "@patchwright retry", user="alice")
    await settle(e2e, at_least=4)

    task = await e2e.store.get_task_by_issue(repo, issue)
    assert task is not None, e2e.comments(repo, issue)
    assert (task.max_attempts, task.max_cost_usd) == (4, 2.5)  # the fixed config, at once
    done = await e2e.wait_for(task.id, lambda t: t.status is Status.REVIEW, timeout=60)
    assert done.pr_number is not None
    assert await e2e.read(repo, done.branch, "src/app.py") == "def greet(name):\n    return 'hello ' + name\n"

    # Still the one report; no "add the label" refusal; the status comment is there.
    assert len(reports(e2e, repo, issue)) == 1
    assert messages.refusal_no_task(f"@{e2e.slug}", "patchwright") not in e2e.comments(repo, issue)
    assert any(body.startswith(messages.STATUS_MARKER) for body in e2e.comments(repo, issue))
