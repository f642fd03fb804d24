"""A task's pull request (:mod:`bot.operations.pulls`): ended, pushed to by a person, in conflict."""

from __future__ import annotations

import pytest

from bot.operations import pulls
from bot.tasks.model import RetryKind, Status

HEAD = "a" * 40
PR_PATH = "/repos/octo/widgets/pulls/12"
COMMENTS_PATH = "/repos/octo/widgets/issues/7/comments"


@pytest.fixture
def fast_backoff(gh):
    """:func:`pulls.check_conflicts` waits with the client's ``sleep``: the recording one."""
    return gh.sleeps


@pytest.mark.parametrize(
    ("merged", "status", "reason"),
    [(True, Status.MERGED, "Pull request #12 was merged."),
     (False, Status.CLOSED, "Pull request #12 was closed without merging.")],
)
async def test_pr_ended(merged, status, reason, ctx, store, gh, in_review) -> None:
    task = await in_review()

    decision, new = await pulls.pr_ended(ctx, task, merged=merged, actor="octocat")

    assert decision.accepted and new is not None
    assert decision.reason_for(ctx.mention) == reason
    row = await store.get_task(task.id)
    assert row is not None and (row.status, row.close_reason) == (status, reason)
    event = (await store.list_events(task.id))[-1]
    assert (event.kind, event.actor, event.delivery_id, event.from_status, event.to_status, event.reason) == (
        "transition", "octocat", "d1", Status.REVIEW, status, reason
    )
    # nothing to close or delete: the PR ended by itself; the status comment says so
    assert gh.writes() == [("POST", COMMENTS_PATH)]
    assert f"**Status:** `{status.value}`" in gh.sent("POST")[0].body["body"]


async def test_a_merged_pr_of_a_running_task_stops_the_agent(ctx, services, store, in_review) -> None:
    stopped: list[str] = []
    services.agent_stops.subscribe(stopped.append)
    task = await in_review()
    await store.transition(task.id, from_statuses=[Status.REVIEW], changes={"status": Status.RUNNING, "worker_id": "w1"})
    running = await store.get_task(task.id)

    _decision, new = await pulls.pr_ended(ctx, running, merged=True, actor="octocat")

    assert new is not None and new.status is Status.MERGED and new.worker_id == ""
    assert stopped == [task.id]


async def test_a_pr_ending_twice_is_refused_the_second_time(ctx, store, gh, in_review) -> None:
    task = await in_review()
    await pulls.pr_ended(ctx, task, merged=True, actor="octocat")
    merged = await store.get_task(task.id)
    gh.clear()

    decision, new = await pulls.pr_ended(ctx, merged, merged=True, actor="octocat")

    assert not decision.accepted and new is None
    assert decision.reason_for(ctx.mention) == "Ignored: this task is already merged."
    assert gh.requests == []
    assert len(await store.list_events(task.id)) == 2


async def test_a_merged_pr_removes_the_review_state_label(ctx, gh, in_review, config_yaml) -> None:
    """With ``state_labels: true`` the issue of a task in review carries ``patchwright:review``
    (SPEC §8); once the PR is merged or closed that label no longer says the truth."""
    config_yaml("state_labels: true\n")
    task = await in_review()

    await pulls.pr_ended(ctx, task, merged=True, actor="octocat")

    assert [r.path for r in gh.sent("DELETE")] == ["/repos/octo/widgets/issues/7/labels/patchwright%3Areview"]


async def test_record_human_push_writes_the_event(ctx, store, gh, in_review) -> None:
    task = await in_review()
    human = "b" * 40

    outcome = await pulls.record_human_push(ctx, task, who="alice", head=human, before=HEAD)

    assert outcome == "recorded human push bbbbbbb"
    events = await store.list_events(task.id)
    assert [e.kind for e in events] == ["created", "human_push"]
    event = events[-1]
    assert (event.actor, event.delivery_id, event.from_status, event.to_status) == ("alice", "d1", None, None)
    assert event.reason == "alice pushed bbbbbbb to the task branch; the bot's next push builds on it"
    assert dict(event.changes) == {"human_head": human, "before": HEAD}
    assert await store.get_task(task.id) == task
    assert gh.requests == []


# -- conflicts ----------------------------------------------------------------------------------------


def pr(mergeable, state: str = "unknown", head: str = HEAD) -> dict:
    return {"number": 12, "state": "open", "mergeable": mergeable, "mergeable_state": state, "head": {"sha": head}}


async def test_mergeability_is_asked_again_until_known_then_dirty_is_a_conflict_retry(
    ctx, store, gh, in_review, fast_backoff, wakes
) -> None:
    task = await in_review(attempt=2, max_attempts=5)
    gh.on("GET", PR_PATH, pr(None), pr(None), pr(False, "dirty"))

    done = await pulls.check_conflicts(ctx, "octo/widgets", [task], actor="alice")

    assert done == ["#12: Merge conflict with main: resolving it as attempt 3 (not counted against the budget)."]
    assert fast_backoff == [0.25, 0.5]
    assert len(gh.sent("GET", PR_PATH)) == 3
    row = await store.get_task(task.id)
    assert row is not None
    assert (row.status, row.retry_kind, row.attempt, row.max_attempts, row.conflict_retries) == (
        Status.PENDING, RetryKind.MERGE_CONFLICT, 3, 6, 1
    )
    assert row.retry_reason == "Merge conflict with main"
    event = (await store.list_events(task.id))[-1]
    assert (event.actor, event.from_status, event.to_status) == ("alice", Status.REVIEW, Status.PENDING)
    assert wakes == ["notify_pending"]


async def test_mergeable_state_waits_with_the_given_sleep(gh) -> None:
    gh.on("GET", PR_PATH, pr(None), pr(None), pr(None), pr(True, "clean"))

    found = await pulls.mergeable_state(gh, "octo/widgets", 12, sleep=gh.sleep)

    assert found["mergeable_state"] == "clean"
    assert gh.sleeps == [0.25, 0.5, 1.0]


async def test_mergeability_never_known_is_left_to_the_reconciler(ctx, store, gh, in_review, fast_backoff) -> None:
    task = await in_review()
    gh.on("GET", PR_PATH, pr(None))

    done = await pulls.check_conflicts(ctx, "octo/widgets", [task], actor="alice")

    assert done == ["#12: mergeability still unknown (the reconciler checks again)"]
    assert fast_backoff == list(pulls.MERGEABLE_BACKOFF)
    assert len(gh.sent("GET", PR_PATH)) == len(pulls.MERGEABLE_BACKOFF) + 1
    assert await store.get_task(task.id) == task


async def test_a_conflict_on_a_moved_head_changes_nothing(ctx, store, gh, in_review) -> None:
    task = await in_review()
    gh.on("GET", PR_PATH, pr(False, "dirty", head="b" * 40))

    done = await pulls.check_conflicts(ctx, "octo/widgets", [task], actor="alice")

    assert done == ["#12: head moved; checked again after the next push"]
    assert await store.get_task(task.id) == task
    assert [e.kind for e in await store.list_events(task.id)] == ["created"]
    assert gh.writes() == []


async def test_a_clean_pr_and_a_task_without_pr_change_nothing(ctx, store, gh, in_review, make_task) -> None:
    task = await in_review()
    no_pr = await make_task(Status.REVIEW, issue=8)
    gh.on("GET", PR_PATH, pr(True, "clean"))

    done = await pulls.check_conflicts(ctx, "octo/widgets", [task, no_pr], actor="alice")

    assert done == ["#12: clean"]
    assert [r.path for r in gh.requests] == [PR_PATH]
    assert await store.get_task(task.id) == task


async def test_a_conflict_retry_swaps_the_state_label(ctx, gh, in_review, config_yaml) -> None:
    """With ``state_labels: true`` a conflict retry moves the task from review to pending:
    ``patchwright:review`` must give way to ``patchwright:running`` as for every other retry."""
    config_yaml("state_labels: true\n")
    task = await in_review()
    gh.on("GET", PR_PATH, pr(False, "dirty"))

    await pulls.check_conflicts(ctx, "octo/widgets", [task], actor="alice")

    assert [r.path for r in gh.sent("DELETE")] == ["/repos/octo/widgets/issues/7/labels/patchwright%3Areview"]
    assert [r.body for r in gh.sent("POST", "/repos/octo/widgets/issues/7/labels")] == [
        {"labels": ["patchwright:running"]}
    ]
