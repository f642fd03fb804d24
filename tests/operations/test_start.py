"""Starting a task from a labelled issue (:mod:`bot.operations.start`)."""

from __future__ import annotations

import pytest

from bot.config import RepoConfig, parse_repo_config
from bot.messages import STATUS_MARKER
from bot.operations.start import IssueSnapshot, agent_choice, start_task, task_defaults
from bot.outcome import Ignored
from bot.tasks.model import RetryKind, Status

ISSUE = IssueSnapshot(repo="octo/widgets", number=7, title="Fix the parser", body="It crashes on empty input.",
                      labels=("patchwright", "bug"), default_branch="trunk")
REACTIONS_PATH = "/repos/octo/widgets/issues/7/reactions"
COMMENTS_PATH = "/repos/octo/widgets/issues/7/comments"


async def test_start_task_creates_the_task_with_its_event_comment_and_reaction(ctx, store, gh, now, wakes) -> None:
    config = parse_repo_config("budget:\n  max_attempts: 4\n  max_cost_usd: 2.5\nagent:\n  model: sonnet\n")

    outcome = await start_task(ctx, ISSUE, login="alice", config=config, config_error=None)

    task = await store.get_task_by_issue("octo/widgets", 7)
    assert task is not None
    assert outcome == f"created task {task.id}"
    assert task.id.startswith("task_")
    assert (task.status, task.attempt, task.max_attempts, task.max_cost_usd, task.retry_kind) == (
        Status.PENDING, 1, 4, 2.5, RetryKind.FIRST
    )
    assert (task.title, task.spec, task.base_branch, task.installation_id) == (
        "Fix the parser", "It crashes on empty input.", "trunk", 1
    )
    assert (task.agent, task.model) == ("claude", "sonnet")  # the server's default agent, the config's model
    assert task.created_at == now
    [event] = await store.list_events(task.id)
    assert (event.kind, event.actor, event.delivery_id, event.reason, event.from_status, event.to_status) == (
        "created", "alice", "d1", "Labelled by alice", None, Status.PENDING
    )
    assert [(r.method, r.path) for r in gh.requests] == [
        ("POST", REACTIONS_PATH), ("GET", COMMENTS_PATH), ("POST", COMMENTS_PATH)
    ]
    assert gh.sent("POST", REACTIONS_PATH)[0].body == {"content": "eyes"}
    body = gh.sent("POST", COMMENTS_PATH)[0].body["body"]
    assert body.startswith(STATUS_MARKER) and "**Status:** `pending`" in body and "**Now:** Labelled by alice" in body
    assert "**Attempt:** 1 of 4" in body
    assert task.status_comment_id == gh.comments_on("octo/widgets", 7)[0]["id"]
    assert wakes == ["notify_pending"]


async def test_start_task_sets_the_state_label_when_the_config_asks(ctx, gh) -> None:
    config = RepoConfig.model_validate({"state_labels": True})

    await start_task(ctx, ISSUE, login="alice", config=config, config_error=None)

    assert [r.body for r in gh.sent("POST", "/repos/octo/widgets/issues/7/labels")] == [
        {"labels": ["patchwright:running"]}
    ]


async def test_a_second_start_of_an_active_task_is_ignored(ctx, store, gh) -> None:
    await start_task(ctx, ISSUE, login="alice", config=RepoConfig(), config_error=None)
    task = await store.get_task_by_issue("octo/widgets", 7)
    gh.clear()

    with pytest.raises(Ignored, match="Issue #7 already has a task; it is waiting for a worker."):
        await start_task(ctx, ISSUE, login="bob", config=RepoConfig(), config_error=None)

    assert await store.get_task_by_issue("octo/widgets", 7) == task
    assert len(await store.list_events(task.id)) == 1
    assert gh.requests == []


@pytest.mark.parametrize("ended", [Status.FAILED, Status.CLOSED])
async def test_a_second_start_of_an_ended_task_starts_it_over(ended, ctx, store, gh, wakes) -> None:
    await start_task(ctx, ISSUE, login="alice", config=RepoConfig(), config_error=None)
    first = await store.get_task_by_issue("octo/widgets", 7)
    await store.transition(
        first.id, from_statuses=[Status.PENDING],
        changes={"status": ended, "attempt": 4, "cost_usd": 3.0, "pr_number": 12, "branch": "patchwright/issue-7",
                 "head_sha": "a" * 40, "close_reason": "gave up"},
    )
    gh.clear()
    edited = IssueSnapshot(repo="octo/widgets", number=7, title="Fix the parser, really", body="Also on None.",
                           labels=("patchwright", "hard"), default_branch="trunk")
    config = RepoConfig.model_validate(
        {"budget": {"max_attempts": 3}, "agent": {"by_label": {"hard": {"preset": "codex", "model": "o3"}}}}
    )

    outcome = await start_task(ctx, edited, login="bob", config=config, config_error=None)

    assert outcome == f"task {first.id} started over"
    task = await store.get_task(first.id)
    assert task is not None
    assert (task.status, task.attempt, task.max_attempts, task.cost_usd, task.pr_number, task.close_reason) == (
        Status.PENDING, 1, 3, 0.0, None, ""
    )
    assert (task.title, task.spec, task.agent, task.model) == ("Fix the parser, really", "Also on None.", "codex", "o3")
    event = (await store.list_events(task.id))[-1]
    assert (event.kind, event.actor, event.from_status, event.to_status, event.reason) == (
        "transition", "bob", ended, Status.PENDING, "Label added again: started over, attempt 1 of 3."
    )
    closed_pr = [r.body for r in gh.sent("PATCH", "/repos/octo/widgets/pulls/12")]
    assert closed_pr == [{"state": "closed"}]
    assert [r.path for r in gh.sent("DELETE")] == ["/repos/octo/widgets/git/refs/heads/patchwright/issue-7"]
    assert gh.sent("POST", REACTIONS_PATH)[0].body == {"content": "eyes"}
    assert wakes == ["notify_pending", "notify_pending"]
    assert len(gh.comments_on("octo/widgets", 7)) == 1  # the one status comment, edited


async def test_a_second_start_of_a_merged_task_is_refused(ctx, store, gh) -> None:
    await start_task(ctx, ISSUE, login="alice", config=RepoConfig(), config_error=None)
    first = await store.get_task_by_issue("octo/widgets", 7)
    await store.transition(first.id, from_statuses=[Status.PENDING], changes={"status": Status.MERGED, "pr_number": 12})
    gh.clear()

    with pytest.raises(Ignored, match="This issue's task is merged. Open a new issue, or use `@patchwright start over`"):
        await start_task(ctx, ISSUE, login="bob", config=RepoConfig(), config_error=None)
    assert (await store.get_task(first.id)).status is Status.MERGED
    assert gh.requests == []


async def test_an_invalid_config_is_answered_with_its_errors(ctx, store, gh, wakes) -> None:
    errors = "line 2: budget.max_attempts: Input should be greater than or equal to 1\nline 5: colour: unknown key"

    with pytest.raises(Ignored, match=r"\.github/patchwright\.yml is invalid; replied with the errors"):
        await start_task(ctx, ISSUE, login="alice", config=RepoConfig(), config_error=errors)

    assert await store.get_task_by_issue("octo/widgets", 7) is None
    # the issue's comments are looked through for an earlier report of the same errors first
    assert [(r.method, r.path) for r in gh.requests] == [("GET", COMMENTS_PATH), ("POST", COMMENTS_PATH)]
    body = gh.sent("POST", COMMENTS_PATH)[0].body["body"]
    assert "`.github/patchwright.yml` on the default branch is not valid" in body
    assert "line 2: budget.max_attempts: Input should be greater than or equal to 1\nline 5: colour: unknown key" in body
    assert "`@patchwright retry`" in body
    assert wakes == []


# -- agent_choice and task_defaults (pure) ------------------------------------------------------------


def _config(agent: dict) -> RepoConfig:
    return RepoConfig.model_validate({"agent": agent})


@pytest.mark.parametrize(
    ("agent", "labels", "expected"),
    [
        ({}, (), ("claude", "")),  # the server's default agent
        ({"preset": "codex", "model": "gpt-5"}, ("bug",), ("codex", "gpt-5")),
        ({"preset": "codex", "by_label": {"cheap": {"preset": "aider"}}}, ("cheap",), ("aider", "")),
        ({"model": "m1", "by_label": {"big": {"model": "m2"}}}, ("big",), ("claude", "m2")),
        # each label with a choice overrides what it names; the later label wins
        (
            {"preset": "codex", "model": "m1",
             "by_label": {"a": {"preset": "aider", "model": "ma"}, "b": {"model": "mb"}}},
            ("a", "b"),
            ("aider", "mb"),
        ),
        (
            {"preset": "codex", "model": "m1",
             "by_label": {"a": {"preset": "aider", "model": "ma"}, "b": {"model": "mb"}}},
            ("b", "a"),
            ("aider", "ma"),
        ),
        ({"by_label": {"a": {"preset": "aider"}}}, ("A", "other"), ("claude", "")),  # labels match exactly
    ],
)
def test_agent_choice(agent, labels, expected) -> None:
    assert agent_choice(_config(agent), labels, "claude") == expected


def test_task_defaults_come_from_the_config_and_the_issue() -> None:
    config = RepoConfig.model_validate(
        {"budget": {"max_attempts": 7, "max_cost_usd": 4.0}, "agent": {"by_label": {"bug": {"preset": "command"}}}}
    )

    defaults = task_defaults(config, ISSUE, "codex")

    assert (defaults.max_attempts, defaults.max_cost_usd, defaults.agent, defaults.model, defaults.base_branch) == (
        7, 4.0, "command", "", "trunk"
    )
    assert task_defaults(RepoConfig(), ISSUE, "codex").agent == "codex"


async def test_a_github_failure_after_the_task_is_stored_does_not_fail_the_start(ctx, store, gh, wakes, answer) -> None:
    """The task is stored (so a redelivery would be a duplicate): GitHub failing to take the
    status comment must not fail the delivery; the next transition posts the comment."""
    gh.on("POST", COMMENTS_PATH, answer(502, {"message": "Server Error"}))

    outcome = await start_task(ctx, ISSUE, login="alice", config=RepoConfig(), config_error=None)

    task = await store.get_task_by_issue("octo/widgets", 7)
    assert task is not None and outcome == f"created task {task.id}"
    assert task.status_comment_id is None and wakes == ["notify_pending"]
