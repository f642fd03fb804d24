"""The reconciler (:mod:`bot.reconciler`) over the in-memory GitHub: each task in review
compared with its pull request."""

from __future__ import annotations

import pytest

from bot.reconciler import Reconciler
from bot.tasks.model import RetryKind, Status

HEAD = "a" * 40
REPO_PATH = "/repos/octo/widgets"
PR_PATH = f"{REPO_PATH}/pulls/12"


def pr(**fields) -> dict:
    return {"number": 12, "state": "open", "merged": False, "mergeable": True, "mergeable_state": "clean",
            "head": {"sha": HEAD}, **fields}


def checks(gh, runs: list[dict], sha: str = HEAD) -> None:
    gh.on("GET", f"{REPO_PATH}/commits/{sha}/check-runs", {"total_count": len(runs), "check_runs": runs})
    gh.on("GET", f"{REPO_PATH}/commits/{sha}/status", {"state": "success", "statuses": []})


def run(name: str, conclusion: str | None, status: str = "completed", sha: str = HEAD) -> dict:
    return {"id": 5, "name": name, "head_sha": sha, "status": status, "conclusion": conclusion,
            "app": {"slug": "some-ci"}, "completed_at": "2024-05-01T11:55:00Z", "output": {"title": f"{name} broke"}}


@pytest.fixture
def reconciler(services) -> Reconciler:
    return Reconciler(services)


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (pr(state="closed", merged=True), Status.MERGED, "Pull request #12 was merged."),
        (pr(state="closed", merged=False), Status.CLOSED, "Pull request #12 was closed without merging."),
    ],
    ids=["merged", "closed"],
)
async def test_an_ended_pull_request_ends_the_task(answer, status, reason, reconciler, store, gh, in_review) -> None:
    task = await in_review()
    gh.on("GET", PR_PATH, answer)

    assert await reconciler.reconcile(task) == reason

    row = await store.get_task(task.id)
    assert row is not None and row.status is status
    event = (await store.list_events(task.id))[-1]
    assert (event.actor, event.delivery_id, event.from_status, event.to_status) == (
        "reconciler", "", Status.REVIEW, status
    )
    assert [r.path for r in gh.sent("GET")][0] == PR_PATH
    assert gh.sent("GET", f"{REPO_PATH}/commits/{HEAD}/check-runs") == []  # CI is not read any more


async def test_a_human_pushed_head_is_left_alone(reconciler, store, gh, in_review) -> None:
    task = await in_review()
    gh.on("GET", PR_PATH, pr(head={"sha": "b" * 40}))

    outcome = await reconciler.reconcile(task)

    assert outcome == "head is bbbbbbb, not the bot's aaaaaaa (human push); nothing to decide"
    assert [r.path for r in gh.requests] == [PR_PATH]
    assert await store.get_task(task.id) == task


async def test_a_dirty_pull_request_is_a_conflict_retry(reconciler, store, gh, in_review) -> None:
    task = await in_review()
    gh.on("GET", PR_PATH, pr(mergeable=False, mergeable_state="dirty"))

    outcome = await reconciler.reconcile(task)

    assert outcome == "#12: Merge conflict with main: resolving it as attempt 2 (not counted against the budget)."
    row = await store.get_task(task.id)
    assert row is not None
    assert (row.status, row.retry_kind, row.conflict_retries, row.max_attempts) == (
        Status.PENDING, RetryKind.MERGE_CONFLICT, 1, 6
    )
    event = (await store.list_events(task.id))[-1]
    assert (event.actor, event.from_status, event.to_status) == ("reconciler", Status.REVIEW, Status.PENDING)
    assert len(gh.sent("GET", PR_PATH)) == 2  # once to compare, once by the conflict check


async def test_a_passed_head_records_the_ci_fact(reconciler, store, gh, in_review) -> None:
    task = await in_review()
    gh.on("GET", PR_PATH, pr())
    checks(gh, [run("tests", "success")])

    assert await reconciler.reconcile(task) == "CI passed on aaaaaaa"

    assert await store.has_fact(f"ci-passed:octo/widgets:{HEAD}")
    assert await store.get_task(task.id) == task
    assert gh.writes() == []


async def test_a_failed_head_missed_by_the_webhooks_is_retried(reconciler, store, gh, in_review) -> None:
    task = await in_review()
    gh.on("GET", PR_PATH, pr())
    checks(gh, [run("tests", "failure")])

    assert await reconciler.reconcile(task) == "CI failed (tests); retrying: attempt 2 of 5."

    row = await store.get_task(task.id)
    assert row is not None
    assert (row.status, row.retry_kind, row.retry_context) == (Status.PENDING, RetryKind.CI_FAILURE, "### tests\ntests broke")
    assert (await store.list_events(task.id))[-1].actor == "reconciler"


async def test_a_task_without_a_pull_request_needs_no_github(reconciler, gh, make_task) -> None:
    task = await make_task(Status.REVIEW)

    assert await reconciler.reconcile(task) == "no pull request"
    assert gh.requests == []


async def test_run_once_reports_a_line_per_task_in_review(reconciler, store, gh, in_review, make_task, answer) -> None:
    merged = await in_review(issue=1)
    pending_ci = await in_review(issue=2, pr_number=13, head_sha="c" * 40)
    broken = await in_review(issue=3, pr_number=14)
    await make_task(Status.PENDING, issue=4, pr_number=15)  # not in review: not looked at
    gh.on("GET", PR_PATH, pr(state="closed", merged=True))
    gh.on("GET", f"{REPO_PATH}/pulls/13", pr(number=13, head={"sha": "c" * 40}))
    checks(gh, [run("tests", None, status="in_progress", sha="c" * 40)], sha="c" * 40)
    gh.on("GET", f"{REPO_PATH}/pulls/14", answer(502, {"message": "Bad Gateway"}))

    lines = await reconciler.run_once()

    assert sorted(lines) == sorted([
        f"{merged.id}: Pull request #12 was merged.",
        f"{pending_ci.id}: checks on ccccccc have not settled (1 still running)",
        f"{broken.id}: failed (Bad Gateway)",
    ])
    assert (await store.get_task(merged.id)).status is Status.MERGED
    assert (await store.get_task(pending_ci.id)).status is Status.REVIEW
    assert not any(r.path == f"{REPO_PATH}/pulls/15" for r in gh.requests)
