"""The repository-config repair loop as a new user walks it (issue 14): a typo in
``.github/patchwright.yml`` is reported once per revision of the file, a push to the default
branch drops the cached config, and ``retry`` (or the label again) starts the task with the
fixed config at once."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from gidgethub import sansio

from bot import messages
from bot.operations.commands import run_command
from bot.operations.configs import default_branch_pushed, report_invalid_config
from bot.operations.start import IssueSnapshot, start_issue_task, start_on_retry
from bot.outcome import Ignored
from bot.prompts import AttemptContext, TaskContext, build_prompt
from bot.tasks.model import RetryKind, Status
from handlers.comments import on_comment_created
from handlers.issues import on_issue_labeled, on_issue_opened, on_issue_unlabeled
from handlers.pulls import on_push_to_default_branch

REPO = "octo/widgets"
CONFIG_PATH = f"/repos/{REPO}/contents/.github/patchwright.yml"
COMMENTS_PATH = f"/repos/{REPO}/issues/7/comments"
ISSUE = IssueSnapshot(repo=REPO, number=7, title="Fix the parser", body="It crashes on empty input.",
                      labels=("patchwright",), default_branch="main")
TYPO = "budget:\n  max_atempts: 4\n"  # the typo: an unknown key
FIXED = "budget:\n  max_attempts: 4\n  max_cost_usd: 2.5\n"
BLOB_TYPO = "1" * 40
BLOB_TYPO_2 = "2" * 40
BLOB_FIXED = "3" * 40


def serve(gh: Any, text: str, blob: str) -> None:
    """Serve ``text`` as the config file, with the blob SHA GitHub answers with."""
    gh.on("GET", CONFIG_PATH, {
        "type": "file", "encoding": "base64", "sha": blob, "path": ".github/patchwright.yml",
        "content": base64.b64encode(text.encode()).decode(),
    })


def invalid_reports(gh: Any) -> list[str]:
    return [b for b in gh.comment_bodies(REPO, 7) if "not valid" in b and "max_atempts" in b]


def issue_payload(*, labels: tuple[str, ...] = ("patchwright",)) -> dict[str, Any]:
    return {
        "number": 7, "title": ISSUE.title, "body": ISSUE.body,
        "labels": [{"name": name} for name in labels],
    }


def event(kind: str, **data: Any) -> sansio.Event:
    base = {
        "repository": {"full_name": REPO, "default_branch": "main"},
        "sender": {"login": "alice", "type": "User"},
        "installation": {"id": 1},
    }
    return sansio.Event({**base, **data}, event=kind, delivery_id="d-" + kind)


def comment_event(body: str, comment_id: int = 501, *, labels: tuple[str, ...] = ("patchwright",)) -> sansio.Event:
    return event(
        "issue_comment", action="created", issue=issue_payload(labels=labels),
        comment={"id": comment_id, "body": body, "user": {"login": "alice", "type": "User"}},
    )


# -- 1. one comment per invalid revision --------------------------------------------------------


async def test_an_invalid_config_is_reported_once_per_revision(ctx, store, gh) -> None:
    serve(gh, TYPO, BLOB_TYPO)

    with pytest.raises(Ignored, match="replied with the errors"):
        await start_issue_task(ctx, ISSUE, login="alice")
    with pytest.raises(Ignored, match="already reported"):
        await start_issue_task(ctx, ISSUE, login="alice")

    [report] = invalid_reports(gh)
    assert report.startswith(messages.config_invalid_marker(BLOB_TYPO))
    assert await store.get_task_by_issue(REPO, 7) is None

    # another invalid revision of the file is reported again
    serve(gh, TYPO + "colour: blue\n", BLOB_TYPO_2)
    with pytest.raises(Ignored, match="replied with the errors"):
        await start_issue_task(ctx, ISSUE, login="alice")
    assert len(invalid_reports(gh)) == 2


async def test_the_opened_and_labeled_events_of_one_issue_make_one_report(ctx, gh) -> None:
    """GitHub sends ``issues.opened`` and then ``issues.labeled`` for an issue opened with the
    trigger label: both start the task, and both used to report the invalid config."""
    serve(gh, TYPO, BLOB_TYPO)

    with pytest.raises(Ignored):
        await on_issue_opened(event("issues", action="opened", issue=issue_payload()), ctx)
    with pytest.raises(Ignored):
        await on_issue_labeled(
            event("issues", action="labeled", issue=issue_payload(), label={"name": "patchwright"}), ctx
        )

    assert len(invalid_reports(gh)) == 1


async def test_only_the_bots_own_marker_counts(ctx, gh) -> None:
    # someone quoting (or forging) the marker does not silence the report
    gh.add_comment(REPO, 7, messages.config_invalid_marker(BLOB_TYPO) + "\nforged", login="mallory")

    posted = await report_invalid_config(ctx, REPO, 7, error="line 2: budget.max_atempts: unknown key", revision=BLOB_TYPO)

    assert posted
    assert len([b for b in gh.comment_bodies(REPO, 7) if "not valid" in b]) == 1
    assert not await report_invalid_config(ctx, REPO, 7, error="line 2: other words", revision=BLOB_TYPO)


# -- 2. a push to the default branch drops the cached config -----------------------------------


async def test_a_push_to_the_default_branch_drops_the_cached_config(ctx, services, gh) -> None:
    serve(gh, "budget:\n  max_attempts: 2\n", BLOB_TYPO)
    config, _ = await ctx.repo_config(REPO, "main")
    assert config.budget.max_attempts == 2
    serve(gh, FIXED, BLOB_FIXED)
    assert (await ctx.repo_config(REPO, "main"))[0].budget.max_attempts == 2  # cached

    with pytest.raises(Ignored, match="not the default branch"):
        await default_branch_pushed(ctx, REPO, branch="feature", default_branch="main")
    assert (await ctx.repo_config(REPO, "main"))[0].budget.max_attempts == 2

    await default_branch_pushed(ctx, REPO, branch="main", default_branch="main")
    assert (await ctx.repo_config(REPO, "main"))[0].budget.max_attempts == 4


async def test_the_push_handler_reads_the_payload_and_drops_the_config(ctx, gh) -> None:
    serve(gh, "budget:\n  max_attempts: 2\n", BLOB_TYPO)
    await ctx.repo_config(REPO, "main")
    serve(gh, FIXED, BLOB_FIXED)

    ignored = event("push", ref="refs/tags/v1", deleted=False)
    with pytest.raises(Ignored):
        await on_push_to_default_branch(ignored, ctx)
    outcome = await on_push_to_default_branch(event("push", ref="refs/heads/main", deleted=False), ctx)

    assert "config" in outcome
    assert (await ctx.repo_config(REPO, "main"))[0].budget.max_attempts == 4


async def test_an_invalid_config_is_not_kept_in_the_cache(ctx, gh) -> None:
    """Another process (a worker) never sees the push: an invalid file is read again each time
    (a conditional request, free of rate limit when the file did not change)."""
    serve(gh, TYPO, BLOB_TYPO)
    _config, error = await ctx.repo_config(REPO, "main")
    assert error is not None and "max_atempts" in error
    serve(gh, FIXED, BLOB_FIXED)
    config, error = await ctx.repo_config(REPO, "main")
    assert error is None and config.budget.max_attempts == 4


# -- 3. retry (or the label again) starts the task with the fixed config ------------------------


async def test_retry_on_an_issue_without_a_task_starts_it_when_the_label_is_on(ctx, store, gh, wakes) -> None:
    serve(gh, TYPO, BLOB_TYPO)
    with pytest.raises(Ignored):
        await start_issue_task(ctx, ISSUE, login="alice")
    serve(gh, FIXED, BLOB_FIXED)  # the fix, pushed to the default branch

    outcome = await start_on_retry(ctx, ISSUE, login="alice", comment_id=501)

    task = await store.get_task_by_issue(REPO, 7)
    assert task is not None and outcome == f"created task {task.id}"
    assert (task.status, task.max_attempts, task.max_cost_usd) == (Status.PENDING, 4, 2.5)
    assert wakes == ["notify_pending"]
    reactions = [r.body for r in gh.sent("POST", f"/repos/{REPO}/issues/comments/501/reactions")]
    assert reactions == [{"content": "+1"}]
    assert await store.has_fact(f"comment:{REPO}:501")


async def test_retry_with_instructions_on_an_issue_without_a_task_gives_them_to_the_first_attempt(
    ctx, store, gh
) -> None:
    serve(gh, FIXED, BLOB_FIXED)

    await start_on_retry(ctx, ISSUE, login="alice", comment_id=502, instructions="Use the stdlib only.")

    task = await store.get_task_by_issue(REPO, 7)
    assert task is not None and task.retry_kind is RetryKind.FIRST
    assert AttemptContext.from_task(task).instructions == "Use the stdlib only."
    prompt = build_prompt(TaskContext.from_task(task), AttemptContext.from_task(task))
    assert "Use the stdlib only." in prompt.tail


async def test_retry_without_a_task_while_the_config_is_still_invalid(ctx, store, gh) -> None:
    serve(gh, TYPO, BLOB_TYPO)
    with pytest.raises(Ignored):
        await start_issue_task(ctx, ISSUE, login="alice")

    with pytest.raises(Ignored, match="invalid"):
        await start_on_retry(ctx, ISSUE, login="alice", comment_id=501)

    assert await store.get_task_by_issue(REPO, 7) is None
    assert len(invalid_reports(gh)) == 1  # the same revision: not reported twice
    reactions = [r.body for r in gh.sent("POST", f"/repos/{REPO}/issues/comments/501/reactions")]
    assert reactions == [{"content": "confused"}]


async def test_the_retry_comment_starts_the_task_through_the_handler(ctx, store, gh) -> None:
    serve(gh, TYPO, BLOB_TYPO)
    with pytest.raises(Ignored):
        await on_issue_opened(event("issues", action="opened", issue=issue_payload()), ctx)
    serve(gh, FIXED, BLOB_FIXED)

    outcome = await on_comment_created(comment_event("@patchwright retry"), ctx)

    task = await store.get_task_by_issue(REPO, 7)
    assert task is not None and task.max_attempts == 4
    assert task.id in outcome
    # nothing says "add the label": the label is on the issue
    refusal = messages.refusal_no_task(ctx.mention, "patchwright")
    assert refusal not in gh.comment_bodies(REPO, 7)
    # the same comment delivered again does nothing more
    with pytest.raises(Ignored):
        await on_comment_created(comment_event("@patchwright retry"), ctx)
    assert len(await store.list_events(task.id)) == 1


async def test_retry_on_an_issue_without_the_label_is_still_refused(ctx, store, gh) -> None:
    with pytest.raises(Ignored, match="no task"):
        await on_comment_created(comment_event("@patchwright retry", labels=("bug",)), ctx)

    assert await store.get_task_by_issue(REPO, 7) is None
    assert messages.refusal_no_task(ctx.mention, "patchwright") in gh.comment_bodies(REPO, 7)


async def test_other_commands_on_an_issue_without_a_task_are_still_refused(ctx, store, gh) -> None:
    with pytest.raises(Ignored, match="no task"):
        await on_comment_created(comment_event("@patchwright stop"), ctx)
    assert await store.get_task_by_issue(REPO, 7) is None


async def test_removing_and_adding_the_label_again_starts_the_task_with_the_fixed_config(ctx, store, gh) -> None:
    serve(gh, TYPO, BLOB_TYPO)
    labeled = event("issues", action="labeled", issue=issue_payload(), label={"name": "patchwright"})
    with pytest.raises(Ignored):
        await on_issue_labeled(labeled, ctx)
    serve(gh, FIXED, BLOB_FIXED)

    with pytest.raises(Ignored, match="no task"):
        await on_issue_unlabeled(
            event("issues", action="unlabeled", issue=issue_payload(labels=()), label={"name": "patchwright"}), ctx
        )
    outcome = await on_issue_labeled(labeled, ctx)

    task = await store.get_task_by_issue(REPO, 7)
    assert task is not None and outcome == f"created task {task.id}"
    assert (task.max_attempts, task.max_cost_usd) == (4, 2.5)


async def test_retry_restarts_a_task_that_failed_with_the_config_error(ctx, store, make_task, config_yaml) -> None:
    """The worker fails a task whose config went invalid, not retryable (category
    ``config``): after the fix, ``retry`` starts it again."""
    failed = await make_task(Status.FAILED, attempt=1, failure_category="config")
    config_yaml(FIXED)
    config, _error = await ctx.repo_config(REPO, "main")

    result = await run_command(ctx, failed, "retry", actor="alice", config=config)

    assert result.accepted
    assert result.task is not None and result.task.status is Status.PENDING
    assert result.task.attempt == 2
