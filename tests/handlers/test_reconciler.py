"""The reconciler repairs what lost webhooks left behind (SPEC §2)."""

from __future__ import annotations

from bot.reconciler import Reconciler
from bot.tasks.model import RetryKind, Status

REPO = "octo-org/widget"


def reconciler_for(h) -> Reconciler:
    return Reconciler(h.runtime.services)


async def start_task(h, title: str):
    issue = await h.emulator.open_issue(REPO, title=title, body="b", user="maintainer")
    await h.emulator.label_issue(REPO, issue["number"], ["patchwright"], user="maintainer")
    await h.settle()
    return issue["number"]


async def test_lost_merge_and_ci_webhooks_are_recovered(harness):
    h = harness
    merged_issue = await start_task(h, "merged quietly")
    ci_issue = await start_task(h, "failed quietly")
    merged = await h.bot_pushed(merged_issue, files={"a.txt": "a\n"})
    await h.settle()
    # From here on GitHub's deliveries are lost: nothing reaches the bot.
    h.emulator.faults.configure({"webhook_drop_rate": 1.0})
    h.emulator.configure_ci(REPO, "test ! -f b.txt", checks=("tests",))  # fails on the PR only
    failing = await h.bot_pushed(ci_issue, files={"b.txt": "b\n"})
    await h.emulator.merge_pull(REPO, merged.pr_number, user="maintainer")
    await h.settle()
    assert (await h.task(merged_issue)).status is Status.REVIEW
    assert (await h.task(ci_issue)).status is Status.REVIEW

    lines = await reconciler_for(h).run_once()
    assert len(lines) == 2, lines
    assert (await h.task(merged_issue)).status is Status.MERGED
    after = await h.task(ci_issue)
    assert after.status is Status.PENDING and after.retry_kind is RetryKind.CI_FAILURE, lines
    assert after.attempt == failing.attempt + 1

    # A second pass finds nothing more to do, and unchanged PRs cost conditional requests only.
    before = len(h.emulator.requests())
    assert await reconciler_for(h).run_once() == []
    assert len(h.emulator.requests()) == before
