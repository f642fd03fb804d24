"""Issue → task → PR events, end to end: the emulator sends real signed webhooks to the bot's
HTTP server, the dispatcher runs the handlers, which call the emulator's REST API."""

from __future__ import annotations

import pytest

from bot import messages
from bot.tasks.model import RetryKind, Status


REPO = "octo-org/widget"


async def label(h, number: int, user: str) -> None:
    await h.emulator.label_issue(REPO, number, ["patchwright"], user=user)
    await h.settle()


async def test_label_by_writer_creates_one_task_eyes_and_one_status_comment(harness):
    h = harness
    issue = await h.emulator.open_issue(REPO, title="Make size 2", body="size() must return 2", user="maintainer")
    await label(h, issue["number"], "maintainer")
    task = await h.task(issue["number"])
    assert task is not None and task.status is Status.PENDING
    assert task.spec == "size() must return 2"
    state = await h.issue_state(issue["number"])
    assert [r["content"] for r in state["reactions_list"]] == ["eyes"]
    status_comments = [c for c in state["comments_list"] if messages.STATUS_MARKER in c["body"]]
    assert len(status_comments) == 1
    assert status_comments[0]["user"]["login"] == "patchwright[bot]"
    assert task.status_comment_id == status_comments[0]["id"]
    # The bot's own comment came back as issue_comment.created and was ignored by the loop guard.
    own = await h.deliveries("issue_comment", "created")
    assert own and all("loop guard" in d.ignore_reason for d in own)
    # Labelling again (a redelivery or a second label event) creates nothing new.
    await h.emulator.unlabel_issue(REPO, issue["number"], "patchwright", user="maintainer")
    await h.settle()
    assert (await h.task(issue["number"])).status is Status.PAUSED
    await label(h, issue["number"], "maintainer")
    state = await h.issue_state(issue["number"])
    assert len([c for c in state["comments_list"] if messages.STATUS_MARKER in c["body"]]) == 1


async def test_label_by_reader_creates_nothing_and_records_why(harness):
    h = harness
    issue = await h.emulator.open_issue(REPO, title="x", body="y", user="reader")
    await label(h, issue["number"], "reader")
    assert await h.task(issue["number"]) is None
    labeled = await h.deliveries("issues", "labeled")
    assert len(labeled) == 1
    assert "not permitted: reader has read permission" in labeled[0].ignore_reason


async def test_retry_from_reader_is_refused_with_confused_and_reply(harness):
    h = harness
    issue = await h.emulator.open_issue(REPO, title="x", body="y", user="maintainer")
    await label(h, issue["number"], "maintainer")
    comment = await h.emulator.comment_on(REPO, issue["number"], "@patchwright retry", user="reader")
    await h.settle()
    state = await h.issue_state(issue["number"])
    target = next(c for c in state["comments_list"] if c["id"] == comment["id"])
    assert target["reactions"]["confused"] == 1 and target["reactions"]["+1"] == 0
    replies = [
        c for c in state["comments_list"]
        if c["user"]["login"] == "patchwright[bot]" and messages.STATUS_MARKER not in c["body"]
    ]
    assert len(replies) == 1 and "write" in replies[0]["body"]
    retry_rows = [d for d in await h.deliveries("issue_comment", "created") if b"retry" in d.payload]
    assert "not permitted: reader has read permission" in retry_rows[0].ignore_reason
    task = await h.task(issue["number"])
    assert task.status is Status.PENDING and task.attempt == 1


async def test_command_from_writer_acts_with_thumbs_up(harness):
    h = harness
    issue = await h.emulator.open_issue(REPO, title="x", body="y", user="maintainer")
    await label(h, issue["number"], "maintainer")
    comment = await h.emulator.comment_on(REPO, issue["number"], "@patchwright stop", user="maintainer")
    await h.settle()
    assert (await h.task(issue["number"])).status is Status.PAUSED
    state = await h.issue_state(issue["number"])
    target = next(c for c in state["comments_list"] if c["id"] == comment["id"])
    assert target["reactions"]["+1"] == 1
    status = next(c for c in state["comments_list"] if messages.STATUS_MARKER in c["body"])
    assert "paused" in status["body"].lower()


async def test_failing_ci_through_four_event_kinds_yields_exactly_one_retry(harness):
    h = harness
    h.emulator.configure_ci(REPO, "python -m pytest -q", checks=("tests",))
    # GitHub Actions reports check runs, a check suite and a workflow run, but no commit statuses;
    # an external CI service running the same tests reports the fourth kind, `status`.
    h.emulator.configure_external_ci(REPO, "python -m pytest -q", contexts=("tests",))
    issue = await h.emulator.open_issue(REPO, title="Make size 2", body="b", user="maintainer")
    await label(h, issue["number"], "maintainer")
    task = await h.bot_pushed(issue["number"], files={"widget.py": "def size():\n    return 3\n"})
    await h.settle()
    kinds = {d.event for d in await h.store.list_deliveries(limit=1000)}
    assert {"check_run", "check_suite", "workflow_run", "status"} <= kinds
    after = await h.task(issue["number"])
    assert after.status is Status.PENDING
    assert after.retry_kind is RetryKind.CI_FAILURE
    assert after.attempt == task.attempt + 1
    assert after.failure_category == "ci_failure:tests"
    assert "assert 3 == 2" in after.retry_context or "assert size() == 2" in after.retry_context
    events = [e for e in await h.store.list_events(task.id) if e.to_status is Status.PENDING and e.from_status is Status.REVIEW]
    assert len(events) == 1


async def test_stale_sha_yields_no_retry(harness):
    h = harness
    issue = await h.emulator.open_issue(REPO, title="t", body="b", user="maintainer")
    await label(h, issue["number"], "maintainer")
    task = await h.bot_pushed(issue["number"], files={"widget.py": "def size():\n    return 2\n"})
    await h.settle()
    old_head = task.head_sha
    # The bot has since pushed a newer head; a failure then arrives for the old one.
    task = await h.store.transition(task.id, from_statuses=[Status.REVIEW], changes={"head_sha": "f" * 40})
    repo = h.emulator.repo(REPO)
    await h.emulator.create_status(
        repo, old_head, state="failure", context="lint", creator=h.emulator.account("maintainer")
    )
    await h.settle()
    after = await h.task(issue["number"])
    assert after.status is Status.REVIEW and after.attempt == task.attempt
    statuses = [d for d in await h.deliveries("status") if b'"failure"' in d.payload]
    assert len(statuses) == 1 and "stale head SHA" in statuses[0].ignore_reason


async def test_review_with_three_inline_comments_yields_one_feedback_retry(harness):
    h = harness
    issue = await h.emulator.open_issue(REPO, title="t", body="b", user="maintainer")
    await label(h, issue["number"], "maintainer")
    task = await h.bot_pushed(
        issue["number"], files={"widget.py": "def size():\n    # one\n    # two\n    # three\n    return 2\n"}
    )
    await h.settle()
    await h.emulator.submit_review(
        REPO,
        task.pr_number,
        user="maintainer",
        event="REQUEST_CHANGES",
        body="Please tidy up.",
        comments=[
            {"path": "widget.py", "line": 2, "body": "first remark"},
            {"path": "widget.py", "line": 3, "body": "second remark"},
            {"path": "widget.py", "line": 4, "body": "third remark"},
        ],
    )
    await h.settle()
    after = await h.task(issue["number"])
    assert after.status is Status.PENDING and after.retry_kind is RetryKind.FEEDBACK
    assert after.max_attempts == task.max_attempts + 1 and after.attempt == task.attempt + 1
    for text in ("Please tidy up.", "first remark", "second remark", "third remark", "widget.py"):
        assert text in after.retry_context
    assert len(after.review_threads) == 3
    comment_events = await h.deliveries("pull_request_review_comment", "created")
    assert len(comment_events) == 3 and all(d.ignore_reason for d in comment_events)


@pytest.mark.parametrize("harness", [{"mergeable_null_reads": 2}], indirect=True)
async def test_base_push_making_pr_dirty_yields_one_conflict_retry(harness):
    h = harness
    issue = await h.emulator.open_issue(REPO, title="t", body="b", user="maintainer")
    await label(h, issue["number"], "maintainer")
    task = await h.bot_pushed(issue["number"], files={"widget.py": "def size():\n    return 2\n"})
    await h.settle()
    await h.emulator.push_commit(
        REPO, branch="main", files={"widget.py": "def size():\n    return 20\n"}, message="conflict", user="maintainer"
    )
    await h.settle()
    after = await h.task(issue["number"])
    assert after.status is Status.PENDING and after.retry_kind is RetryKind.MERGE_CONFLICT
    assert after.max_attempts == task.max_attempts + 1
    assert after.conflict_retries == 1


async def test_merge_marks_merged_and_close_marks_closed(harness):
    h = harness
    one = await h.emulator.open_issue(REPO, title="one", body="b", user="maintainer")
    two = await h.emulator.open_issue(REPO, title="two", body="b", user="maintainer")
    await label(h, one["number"], "maintainer")
    await label(h, two["number"], "maintainer")
    t1 = await h.bot_pushed(one["number"], files={"a.txt": "a\n"})
    t2 = await h.bot_pushed(two["number"], files={"b.txt": "b\n"})
    await h.settle()
    await h.emulator.merge_pull(REPO, t1.pr_number, user="maintainer")
    await h.emulator.close_pull(REPO, t2.pr_number, user="maintainer")
    await h.settle()
    assert (await h.task(one["number"])).status is Status.MERGED
    assert (await h.task(two["number"])).status is Status.CLOSED


async def test_redelivering_every_webhook_changes_nothing(harness):
    h = harness
    issue = await h.emulator.open_issue(REPO, title="t", body="b", user="maintainer")
    await label(h, issue["number"], "maintainer")
    await h.emulator.comment_on(REPO, issue["number"], "@patchwright stop", user="maintainer")
    await h.settle()
    before_task = await h.task(issue["number"])
    before_issue = await h.issue_state(issue["number"])
    rows = len(await h.store.list_deliveries(limit=10_000))
    delivered = [d for d in h.emulator.deliveries() if d.status_code in (200, 202)]
    count = len(h.emulator.deliveries())
    for delivery in delivered:
        h.emulator.redeliver(delivery.id)
    await h.settle()
    assert await h.task(issue["number"]) == before_task
    assert await h.issue_state(issue["number"]) == before_issue
    assert len(await h.store.list_deliveries(limit=10_000)) == rows
    redelivered = h.emulator.deliveries()[count:]
    assert len(redelivered) == len(delivered) and all(d.status_code == 200 for d in redelivered)


async def test_every_example_payload_through_the_handlers_leaves_the_process_healthy(harness, shared_dir, sign):
    """Real payloads of other installations and repositories: every row is finished (done, or
    failed with the reason recorded), nothing stays pending, the server still answers."""
    import uuid

    import aiohttp

    from bot.store.base import DeliveryState

    h = harness
    url = h.emulator.app(h.app_id).webhook_url
    root = shared_dir / "github" / "webhooks"
    async with aiohttp.ClientSession() as session:
        for path in sorted(root.rglob("*.json")):
            body = path.read_bytes()
            headers = {
                "Content-Type": "application/json",
                "X-GitHub-Event": path.relative_to(root).parts[0],
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": sign(body, "handler-e2e-secret"),
            }
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status in (200, 202), path
        await h.settle()
        rows = await h.store.list_deliveries(limit=10_000)
        assert rows and all(d.state in (DeliveryState.DONE, DeliveryState.FAILED) for d in rows)
        assert all(d.outcome or d.ignore_reason for d in rows)
        async with session.get(url.replace("/webhook", "/healthz")) as resp:
            assert resp.status == 200


async def test_the_same_review_sent_again_under_a_new_delivery_id_makes_no_second_retry(harness, sign):
    """GitHub may send an event twice with different delivery ids: a review is one retry."""
    import uuid

    import aiohttp

    h = harness
    issue = await h.emulator.open_issue(REPO, title="t", body="b", user="maintainer")
    await label(h, issue["number"], "maintainer")
    task = await h.bot_pushed(issue["number"], files={"widget.py": "def size():\n    return 2\n"})
    await h.settle()
    await h.emulator.submit_review(REPO, task.pr_number, user="maintainer", event="REQUEST_CHANGES", body="Rename it.")
    await h.settle()
    first = await h.task(issue["number"])
    assert first.retry_kind is RetryKind.FEEDBACK
    # The attempt ran and pushed again: the task is back in review when the copy arrives.
    again = await h.store.transition(first.id, from_statuses=[Status.PENDING], changes={"status": Status.REVIEW})
    row = (await h.deliveries("pull_request_review", "submitted"))[0]
    url = h.emulator.app(h.app_id).webhook_url
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request_review",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(row.payload, "handler-e2e-secret"),
    }
    async with aiohttp.ClientSession() as session, session.post(url, data=row.payload, headers=headers) as resp:
        assert resp.status == 202
    await h.settle()
    after = await h.task(issue["number"])
    assert after.status is Status.REVIEW and after.attempt == again.attempt
    copies = await h.deliveries("pull_request_review", "submitted")
    assert len(copies) == 2 and "already" in copies[0].ignore_reason + copies[1].ignore_reason


async def test_the_same_command_sent_again_under_a_new_delivery_id_is_not_answered_twice(harness, sign):
    import uuid

    import aiohttp

    h = harness
    issue = await h.emulator.open_issue(REPO, title="t", body="b", user="maintainer")
    await label(h, issue["number"], "maintainer")
    await h.emulator.comment_on(REPO, issue["number"], "@patchwright stop", user="maintainer")
    await h.settle()
    before = await h.issue_state(issue["number"])
    row = next(d for d in await h.deliveries("issue_comment", "created") if b"@patchwright stop" in d.payload)
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issue_comment",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(row.payload, "handler-e2e-secret"),
    }
    url = h.emulator.app(h.app_id).webhook_url
    async with aiohttp.ClientSession() as session, session.post(url, data=row.payload, headers=headers) as resp:
        assert resp.status == 202
    await h.settle()
    assert (await h.issue_state(issue["number"]))["comments_list"] == before["comments_list"]
    assert (await h.task(issue["number"])).status is Status.PAUSED
