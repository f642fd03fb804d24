"""Every task verb through :func:`bot.operations.commands.run_command`: the row, the audit
record, the effects and the status comment, against the in-memory GitHub."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import RepoConfig
from bot.messages import STATUS_MARKER
from bot.operations.commands import budget_of, run_command, run_task_command, task_verb
from bot.operations.services import offline_services
from bot.tasks import verbs
from bot.tasks.model import RetryKind, Status

PR_FIELDS = {"pr_number": 12, "pr_url": "https://github.com/octo/widgets/pull/12", "branch": "patchwright/issue-7",
             "head_sha": "a" * 40}
PR_PATH = "/repos/octo/widgets/pulls/12"
BRANCH_PATH = "/repos/octo/widgets/git/refs/heads/patchwright/issue-7"
COMMENTS_PATH = "/repos/octo/widgets/issues/7/comments"

# verb -> (status it is accepted in, fields, status after, the reason's start)
ACCEPTED: dict[str, tuple[Status, dict[str, Any], Status, str]] = {
    "retry": (Status.FAILED, {"attempt": 3, "close_reason": "tests failed", "failure_category": "ci_failure:tests",
                              "consecutive_failures": 3},
              Status.PENDING, "Retry requested by alice: attempt 4 of 6."),
    "stop": (Status.RUNNING, {"worker_id": "w1", "attempt": 2}, Status.PAUSED, "Paused by alice."),
    "resume": (Status.PAUSED, {"attempt": 3}, Status.PENDING, "Resumed: attempt 3 of 5 is waiting for a worker."),
    "start over": (Status.REVIEW, {**PR_FIELDS, "attempt": 3, "cost_usd": 2.5}, Status.PENDING,
                   "Started over: attempt 1 of 5."),
    "cancel": (Status.REVIEW, PR_FIELDS, Status.CLOSED, "Cancelled by alice."),
}

# verb -> (status it is refused in, the reason's start); start over is accepted from every status
REFUSED: dict[str, tuple[Status, str]] = {
    "retry": (Status.RUNNING, "Cannot retry: this task is running. Use `@patchwright stop` first."),
    "stop": (Status.REVIEW, "Cannot stop: this task is in review."),
    "resume": (Status.PENDING, "Cannot resume: this task is waiting for a worker."),
    "cancel": (Status.MERGED, "Cannot cancel: this task is merged. Use `@patchwright start over`"),
}


def test_the_tables_cover_every_verb() -> None:
    names = {v.name for v in verbs.TASK_VERBS}
    assert set(ACCEPTED) == names
    assert set(REFUSED) == names - {"start over"}


@pytest.mark.parametrize("name", list(ACCEPTED))
async def test_accepted_verb_moves_the_task_and_writes_the_audit_record(name, ctx, store, gh, make_task) -> None:
    status, fields, after, reason = ACCEPTED[name]
    task = await make_task(status, **fields)

    result = await run_command(ctx, task, name, actor="alice")

    assert result.accepted
    assert result.previous_status is status
    assert result.reason == reason
    row = await store.get_task(task.id)
    assert row is not None and row.status is after
    assert row.version > task.version
    events = await store.list_events(task.id)
    assert [e.kind for e in events] == ["created", "transition"]
    event = events[-1]
    assert (event.actor, event.delivery_id, event.from_status, event.to_status) == ("alice", "d1", status, after)
    assert event.reason == reason
    assert event.changes["status"] == after.value
    # the status comment was created on the issue and its id stored
    posted = gh.sent("POST", COMMENTS_PATH)
    assert len(posted) == 1
    assert posted[0].body["body"].startswith(STATUS_MARKER)
    assert f"**Status:** `{after.value}`" in posted[0].body["body"]
    assert f"**Now:** {reason}" in posted[0].body["body"]
    assert row.status_comment_id == gh.comments_on("octo/widgets", 7)[0]["id"]
    assert result.task is not None and result.task.status_comment_id == row.status_comment_id


@pytest.mark.parametrize("name", list(REFUSED))
async def test_refused_verb_changes_nothing(name, ctx, store, gh, make_task, wakes) -> None:
    status, reason = REFUSED[name]
    task = await make_task(status, **PR_FIELDS)

    result = await run_command(ctx, task, name, actor="alice")

    assert not result.accepted
    assert result.task is None
    assert result.reason.startswith(reason)
    assert "{bot}" not in result.reason
    assert await store.get_task(task.id) == task
    assert [e.kind for e in await store.list_events(task.id)] == ["created"]
    assert gh.requests == []
    assert wakes == []


@pytest.mark.parametrize("status", list(Status))
async def test_start_over_is_accepted_from_every_status(status, ctx, store, gh, make_task) -> None:
    task = await make_task(status, **PR_FIELDS, attempt=4, cost_usd=3.0, agent_session="s1", consecutive_failures=2)

    result = await run_command(ctx, task, "start over", actor="alice")

    assert result.accepted
    row = await store.get_task(task.id)
    assert row is not None
    assert (row.status, row.attempt, row.cost_usd, row.pr_number, row.branch, row.head_sha, row.agent_session) == (
        Status.PENDING, 1, 0.0, None, "", "", ""
    )
    assert row.retry_kind is RetryKind.FIRST and row.consecutive_failures == 0
    event = (await store.list_events(task.id))[-1]
    # a pending task stays pending: an update, not a transition
    assert event.kind == ("update" if status is Status.PENDING else "transition")
    assert (event.from_status, event.to_status) == (status, Status.PENDING)
    closes = gh.sent("PATCH", PR_PATH)
    # a merged pull request stays merged; every other one is closed
    assert [r.body for r in closes] == ([] if status is Status.MERGED else [{"state": "closed"}])
    assert [r.path for r in gh.sent("DELETE")] == [BRANCH_PATH]


async def test_retry_and_resume_and_start_over_wake_the_workers(ctx, make_task, wakes) -> None:
    failed = await make_task(Status.FAILED, issue=1)
    paused = await make_task(Status.PAUSED, issue=2)
    review = await make_task(Status.REVIEW, issue=3, **PR_FIELDS)
    for task, name in ((failed, "retry"), (paused, "resume"), (review, "start over")):
        before = len(wakes)
        result = await run_command(ctx, task, name, actor="alice")
        assert result.accepted and result.task is not None and result.task.status is Status.PENDING
        assert len(wakes) == before + 1, name


async def test_stop_on_a_running_task_stops_its_agent(ctx, services, store, make_task, wakes) -> None:
    stopped: list[str] = []
    unsubscribe = services.agent_stops.subscribe(stopped.append)
    task = await make_task(Status.RUNNING, worker_id="w1", attempt=2, max_attempts=5)

    result = await run_command(ctx, task, "stop", actor="alice")

    assert stopped == [task.id]
    row = await store.get_task(task.id)
    assert row is not None
    # a stop costs no budget: the attempt is over, the next one gets a new number
    assert (row.status, row.attempt, row.max_attempts, row.worker_id) == (Status.PAUSED, 3, 6, "")
    assert result.reason == "Paused by alice."
    assert wakes == []
    unsubscribe()
    other = await make_task(Status.RUNNING, issue=8, worker_id="w2")
    await run_command(ctx, other, "stop", actor="alice")
    assert stopped == [task.id]


async def test_stop_on_a_pending_task_stops_no_agent(ctx, services, store, make_task) -> None:
    stopped: list[str] = []
    services.agent_stops.subscribe(stopped.append)
    task = await make_task(Status.PENDING)

    result = await run_command(ctx, task, "stop", actor="alice")

    assert result.accepted and result.task is not None
    assert result.task.status is Status.PAUSED and result.task.attempt == 1
    assert stopped == []


async def test_cancel_closes_the_pull_request_and_deletes_the_branch(ctx, store, gh, make_task) -> None:
    task = await make_task(Status.REVIEW, **PR_FIELDS)

    result = await run_command(ctx, task, "cancel", actor="alice")

    assert result.accepted
    assert gh.writes() == [("PATCH", PR_PATH), ("DELETE", BRANCH_PATH), ("POST", COMMENTS_PATH)]
    assert gh.sent("PATCH", PR_PATH)[0].body == {"state": "closed"}
    row = await store.get_task(task.id)
    assert row is not None and row.status is Status.CLOSED and row.close_reason == "Cancelled by alice."


async def test_cancel_on_a_running_task_without_a_pr_stops_the_agent_only(ctx, services, gh, make_task) -> None:
    stopped: list[str] = []
    services.agent_stops.subscribe(stopped.append)
    task = await make_task(Status.RUNNING, worker_id="w1")

    result = await run_command(ctx, task, "cancel", actor="alice")

    assert result.accepted
    assert stopped == [task.id]
    assert gh.writes() == [("POST", COMMENTS_PATH)]


async def test_a_failing_effect_does_not_fail_the_command(ctx, store, gh, make_task, answer) -> None:
    gh.on("PATCH", PR_PATH, answer(500, {"message": "GitHub is down"}))
    task = await make_task(Status.REVIEW, **PR_FIELDS)

    result = await run_command(ctx, task, "cancel", actor="alice")

    assert result.accepted
    row = await store.get_task(task.id)
    assert row is not None and row.status is Status.CLOSED
    assert ("DELETE", BRANCH_PATH) in gh.writes()


async def test_the_existing_status_comment_is_edited_in_place(ctx, store, gh, make_task) -> None:
    comment_id = gh.add_comment("octo/widgets", 7, f"{STATUS_MARKER}\nold", comment_id=555)
    task = await make_task(Status.PAUSED, status_comment_id=comment_id)

    result = await run_command(ctx, task, "resume", actor="alice")

    assert result.accepted
    assert gh.sent("POST", COMMENTS_PATH) == []
    edits = gh.sent("PATCH", "/repos/octo/widgets/issues/comments/555")
    assert len(edits) == 1 and "**Status:** `pending`" in edits[0].body["body"]
    assert gh.comment_bodies("octo/widgets", 7) == [edits[0].body["body"]]


async def test_a_deleted_status_comment_is_found_by_its_marker(ctx, store, gh, make_task) -> None:
    other = gh.add_comment("octo/widgets", 7, "a human's comment", login="alice")
    found = gh.add_comment("octo/widgets", 7, f"{STATUS_MARKER}\nold")
    task = await make_task(Status.PAUSED, status_comment_id=404404)  # deleted by someone

    await run_command(ctx, task, "resume", actor="alice")

    assert [r.path for r in gh.sent("PATCH")] == [
        "/repos/octo/widgets/issues/comments/404404", f"/repos/octo/widgets/issues/comments/{found}"
    ]
    assert gh.sent("POST") == []
    row = await store.get_task(task.id)
    assert row is not None and row.status_comment_id == found != other


async def test_state_labels_follow_the_status_when_the_config_asks(ctx, gh, make_task) -> None:
    config = RepoConfig.model_validate({"state_labels": True})
    task = await make_task(Status.FAILED)

    await run_command(ctx, task, "retry", actor="alice", config=config)

    assert [r.path for r in gh.sent("DELETE")] == ["/repos/octo/widgets/issues/7/labels/patchwright%3Afailed"]
    assert [r.body for r in gh.sent("POST", "/repos/octo/widgets/issues/7/labels")] == [
        {"labels": ["patchwright:running"]}
    ]


async def test_retry_in_review_is_feedback_with_the_instructions(ctx, store, make_task) -> None:
    task = await make_task(Status.REVIEW, **PR_FIELDS, attempt=2)

    result = await run_command(ctx, task, "retry", actor="cli", author="alice", instructions="use tabs")

    assert result.accepted and result.task is not None
    assert result.reason == "Feedback from alice: retrying as attempt 3 (not counted against the budget)."
    row = await store.get_task(task.id)
    assert row is not None
    assert (row.status, row.retry_kind, row.retry_context, row.attempt, row.max_attempts, row.feedback_retries) == (
        Status.PENDING, RetryKind.FEEDBACK, "alice wrote:\nuse tabs", 3, 6, 1
    )
    assert (await store.list_events(task.id))[-1].actor == "cli"


async def test_a_command_given_a_stale_task_decides_again_on_the_fresh_one(ctx, store, make_task) -> None:
    stale = await make_task(Status.FAILED, attempt=2)
    await store.transition(stale.id, from_statuses=[Status.FAILED], changes={"status": Status.PAUSED})

    result = await run_command(ctx, stale, "retry", actor="alice")

    assert result.accepted and result.task is not None
    assert result.previous_status is Status.PAUSED
    # a paused task's attempt has not run: it keeps its number (a failed one would be 3)
    assert (result.task.status, result.task.attempt) == (Status.PENDING, 2)
    assert (await store.list_events(stale.id))[-1].from_status is Status.PAUSED


async def test_a_command_refused_after_the_fresh_read_changes_nothing(ctx, store, gh, make_task) -> None:
    stale = await make_task(Status.FAILED, **PR_FIELDS)
    await store.transition(stale.id, from_statuses=[Status.FAILED], changes={"status": Status.MERGED})

    result = await run_command(ctx, stale, "retry", actor="alice")

    assert not result.accepted
    assert result.reason.startswith("Cannot retry: this task is merged.")
    assert [e.kind for e in await store.list_events(stale.id)] == ["created"]
    assert gh.requests == []


# -- the budget of the repository's config ----------------------------------------------------------


def test_budget_of_reads_the_config() -> None:
    assert budget_of(None) == verbs.Budget(max_attempts=5, max_cost_usd=None, feedback_limit=20)
    config = RepoConfig.model_validate(
        {"budget": {"max_attempts": 7, "max_cost_usd": 3.5, "max_feedback_retries": 4}}
    )
    assert budget_of(config) == verbs.Budget(max_attempts=7, max_cost_usd=3.5, feedback_limit=4)


async def test_start_over_takes_max_attempts_from_the_config(ctx, store, make_task) -> None:
    task = await make_task(Status.FAILED, attempt=5)
    config = RepoConfig.model_validate({"budget": {"max_attempts": 9}})

    result = await run_command(ctx, task, "start over", actor="alice", config=config)

    assert result.reason == "Started over: attempt 1 of 9."
    row = await store.get_task(task.id)
    assert row is not None and (row.attempt, row.max_attempts) == (1, 9)


async def test_retry_at_the_cost_cap_needs_a_raised_cap_in_the_config(ctx, store, make_task) -> None:
    task = await make_task(Status.FAILED, cost_usd=10.0, max_cost_usd=10.0)

    refused = await run_command(ctx, task, "retry", actor="alice")
    assert not refused.accepted
    assert "spent $10.00 of its $10.00 cost cap" in refused.reason

    config = RepoConfig.model_validate({"budget": {"max_cost_usd": 25}})
    accepted = await run_command(ctx, task, "retry", actor="alice", config=config)
    assert accepted.accepted
    row = await store.get_task(task.id)
    assert row is not None and (row.status, row.max_cost_usd) == (Status.PENDING, 25.0)


async def test_retry_in_review_respects_the_feedback_limit_of_the_config(ctx, make_task) -> None:
    task = await make_task(Status.REVIEW, **PR_FIELDS, feedback_retries=2)
    config = RepoConfig.model_validate({"budget": {"max_feedback_retries": 2}})

    result = await run_command(ctx, task, "retry", actor="alice", config=config)

    assert not result.accepted
    assert "already had 2 feedback retries" in result.reason


# -- by task id (the command line and the web API) ------------------------------------------------


async def test_run_task_command_of_an_unknown_task_is_none(services, gh) -> None:
    assert await run_task_command(services, "task_nope", "retry", actor="cli") is None
    assert gh.requests == []


@pytest.mark.parametrize("name", ["frobnicate", "status", "help", ""])
async def test_run_task_command_with_an_unknown_verb_raises(name, services, make_task) -> None:
    task = await make_task(Status.FAILED)
    with pytest.raises(ValueError, match="unknown task command") as raised:
        await run_task_command(services, task.id, name, actor="cli")
    assert "retry, stop, resume, start over, cancel" in str(raised.value)
    with pytest.raises(ValueError):
        task_verb(name)


async def test_run_task_command_reads_the_repository_config(services, store, gh, make_task, config_yaml) -> None:
    config_yaml("budget:\n  max_attempts: 8\n")
    task = await make_task(Status.FAILED)

    result = await run_task_command(services, task.id, "start over", actor="cli", author="alice")

    assert result is not None and result.accepted
    row = await store.get_task(task.id)
    assert row is not None and row.max_attempts == 8
    read = gh.sent("GET", "/repos/octo/widgets/contents/.github/patchwright.yml")
    assert len(read) == 1 and read[0].query["ref"] == "main"
    event = (await store.list_events(task.id))[-1]
    assert (event.actor, event.delivery_id) == ("cli", "")
    assert len(gh.sent("POST", COMMENTS_PATH)) == 1


async def test_run_task_command_without_github_changes_only_the_store(settings, store, gh, make_task, now) -> None:
    offline = offline_services(settings, store, clock=lambda: now)
    task = await make_task(Status.REVIEW, **PR_FIELDS)

    result = await run_task_command(offline, task.id, "cancel", actor="cli")

    assert result is not None and result.accepted and result.task is not None
    assert result.task.status is Status.CLOSED and result.task.status_comment_id is None
    assert gh.requests == []
    events = await store.list_events(task.id)
    assert (events[-1].from_status, events[-1].to_status) == (Status.REVIEW, Status.CLOSED)

