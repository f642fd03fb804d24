"""Editing a paused task's input: the rule (:func:`bot.tasks.rules.edit_input`, pure), what the
next attempt's prompt reads after it and after ``resume``/``retry``, and the use case
(:func:`bot.operations.edit.edit_task_input`: the row, the audit record, the status comment)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bot.messages import STATUS_MARKER
from bot.operations.commands import run_task_command
from bot.operations.edit import (
    MAX_INSTRUCTIONS_CHARS,
    MAX_SPEC_CHARS,
    NOTHING_GIVEN,
    edit_problem,
    edit_task_input,
)
from bot.prompts import AttemptContext, TaskContext, build_prompt
from bot.tasks import rules
from bot.tasks.model import RetryKind, Status, Task, plain_context_field
from bot.tasks.transitions import render_reason

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
COMMENTS_PATH = "/repos/octo/widgets/issues/7/comments"


def paused(**fields) -> Task:
    task = rules.new_task(
        id="task_edit", repo="octo/widgets", installation_id=1, issue_number=7, title="Fix the parser",
        spec="It crashes on empty input.", max_attempts=5, max_cost_usd=10.0, agent="claude", model="",
        base_branch="main", now=NOW,
    )
    return task.replace(status=Status.PAUSED, **fields)


def prompt_of(task: Task) -> str:
    return build_prompt(TaskContext.from_task(task), AttemptContext.from_task(task)).text


# -- the rule (pure) -----------------------------------------------------------------------------


def test_edit_sets_spec_and_instructions_of_a_paused_task_and_says_what_changed():
    task = paused()
    decision = rules.edit_input(task, spec="Empty input must give [].", instructions="Add a test first.",
                                author="alice", now=NOW)
    assert decision.accepted and decision.task.status is Status.PAUSED
    assert decision.task.spec == "Empty input must give []."
    assert rules.instructions_of(decision.task) == "Add a test first."
    assert set(decision.changes) - {"updated_at"} == {"spec", "retry_context"}
    reason = render_reason(decision.reason, "@patchwright")
    assert reason.startswith("Input edited by alice while paused: the issue text (26 → 25 characters)")
    assert "the instructions (0 → 17 characters)" in reason and "`@patchwright resume`" in reason
    prompt = prompt_of(decision.task)
    assert "Empty input must give []." in prompt and "It crashes on empty input." not in prompt
    assert "### Instructions from a maintainer" in prompt and "Add a test first." in prompt


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (Status.PENDING, "`{bot} stop`"),
        (Status.RUNNING, "`{bot} stop` first"),
        (Status.WAITING, "`{bot} stop`"),
        (Status.REVIEW, "in review"),
        (Status.FAILED, "`{bot} retry [instructions]`"),
        (Status.MERGED, "It is finished"),
        (Status.CLOSED, "It is finished"),
    ],
)
def test_edit_is_refused_outside_paused_naming_the_status_and_what_to_do(status, hint):
    task = paused().replace(status=status)
    decision = rules.edit_input(task, spec="new", author="alice", now=NOW)
    assert not decision.accepted and decision.task is task
    assert f"this task is {rules.STATE_WORDS[status]}" in decision.reason
    assert hint in decision.reason


def test_edit_to_what_the_task_has_is_refused_as_unchanged():
    task = paused()
    assert rules.edit_input(task, spec=task.spec, instructions="", now=NOW).reason == rules.EDIT_UNCHANGED


@pytest.mark.parametrize(
    ("kind", "context", "field", "value"),
    [
        (RetryKind.CI_FAILURE, "AssertionError: 1 != 2", "ci_log", "AssertionError: 1 != 2"),
        (RetryKind.FEEDBACK, "alice wrote:\nrename it", "feedback", "alice wrote:\nrename it"),
        (RetryKind.MERGE_CONFLICT, "a.py\nb.py", "conflicted_files", ("a.py", "b.py")),
        (RetryKind.FIRST, "", "feedback", ""),
    ],
)
def test_instructions_join_the_job_the_next_attempt_already_has(kind, context, field, value):
    task = paused(retry_kind=kind, retry_context=context)
    before = AttemptContext.from_task(task)
    edited = rules.edit_input(task, instructions="Keep it small.", now=NOW).task
    after = AttemptContext.from_task(edited)
    assert getattr(after, field) == getattr(before, field) == value
    assert after.instructions == "Keep it small." and after.kind is kind
    removed = rules.edit_input(edited, instructions="", now=NOW).task
    assert AttemptContext.from_task(removed).instructions == "" and getattr(AttemptContext.from_task(removed), field) == value


def test_the_rules_read_plain_contexts_as_the_prompt_does():
    for kind in RetryKind:
        if kind is RetryKind.MERGE_CONFLICT:
            continue
        task = paused(retry_kind=kind, retry_context="some text")
        data = json.loads(rules.with_instructions(kind, task.retry_context, "x"))
        from_prompt = AttemptContext.from_task(task)
        field = next((k for k in data if k != "instructions"), "instructions")  # manual: the text was instructions
        assert getattr(from_prompt, field) == "some text", kind
        assert plain_context_field(kind) == field


def test_resume_and_a_plain_retry_keep_the_edited_input():
    edited = rules.edit_input(paused(attempt=2), spec="New text.", instructions="Use a dict.", now=NOW).task
    resumed = rules.resume(edited, now=NOW).task
    assert resumed.status is Status.PENDING and resumed.spec == "New text."
    assert "Use a dict." in prompt_of(resumed) and "New text." in prompt_of(resumed)

    queued = edited.replace(queued_feedback=("bob wrote:\nalso docs",))
    with_feedback = rules.resume(queued, now=NOW).task
    attempt = AttemptContext.from_task(with_feedback)
    assert attempt.kind is RetryKind.FEEDBACK and attempt.instructions == "Use a dict."
    assert "also docs" in attempt.feedback

    retried = rules.manual_retry(edited, now=NOW, author="alice").task
    assert retried.status is Status.PENDING and "Use a dict." in prompt_of(retried)
    overridden = rules.manual_retry(edited, instructions="Other way.", now=NOW, author="alice").task
    assert "Other way." in prompt_of(overridden) and "Use a dict." not in prompt_of(overridden)


def test_a_manual_retrys_plain_instructions_are_not_taken_as_edited():
    task = paused(retry_kind=RetryKind.MANUAL, retry_context="alice wrote:\ntry again",
                  queued_feedback=("bob wrote:\nx",))
    assert rules.instructions_of(task) == "alice wrote:\ntry again"
    assert AttemptContext.from_task(rules.resume(task, now=NOW).task).instructions == ""


def test_edit_problems_are_found_before_any_rule():
    assert edit_problem(None, None) == NOTHING_GIVEN
    assert edit_problem("x" * (MAX_SPEC_CHARS + 1), None) is not None
    assert edit_problem(None, "x" * (MAX_INSTRUCTIONS_CHARS + 1)) is not None
    assert edit_problem("", "") is None


# -- the use case ------------------------------------------------------------------------------


async def test_edit_task_input_writes_the_row_the_audit_record_and_the_status_comment(services, store, gh, make_task):
    task = await make_task(Status.PAUSED, attempt=2)

    result = await edit_task_input(services, task.id, spec="Handle empty input.", instructions="Add a test.",
                                   actor="alice")

    assert result is not None and result.accepted
    row = await store.get_task(task.id)
    assert row.status is Status.PAUSED and row.spec == "Handle empty input."
    assert rules.instructions_of(row) == "Add a test."
    event = (await store.list_events(task.id))[-1]
    assert event.actor == "alice" and event.kind == "update"
    assert set(event.changes) >= {"spec", "retry_context"} and event.changes["spec"] == "Handle empty input."
    assert event.reason == result.reason and "the issue text" in event.reason and "the instructions" in event.reason
    status_comments = [c for c in gh.comment_bodies("octo/widgets", 7) if STATUS_MARKER in c]
    assert status_comments and "Input edited by alice" in status_comments[-1]

    resumed = await run_task_command(services, task.id, "resume", actor="alice")
    assert resumed is not None and resumed.accepted
    assert "Add a test." in prompt_of(resumed.task) and "Handle empty input." in prompt_of(resumed.task)


@pytest.mark.parametrize("status", [Status.RUNNING, Status.PENDING, Status.REVIEW, Status.MERGED, Status.FAILED])
async def test_edit_task_input_outside_paused_changes_nothing(status, services, store, make_task):
    task = await make_task(status)
    events = len(await store.list_events(task.id))

    result = await edit_task_input(services, task.id, spec="other", actor="alice")

    assert result is not None and not result.accepted and result.previous.status is status
    assert "@patchwright" in result.reason and "{bot}" not in result.reason
    assert (await store.get_task(task.id)).spec == task.spec
    assert len(await store.list_events(task.id)) == events


async def test_edit_task_input_of_no_task_and_of_nothing(services):
    assert await edit_task_input(services, "task_nope", spec="x", actor="alice") is None
    with pytest.raises(ValueError, match="Give the new issue text"):
        await edit_task_input(services, "task_nope", actor="alice")


def test_feedback_on_a_resumed_pending_task_keeps_the_edited_instructions_and_its_ci_log():
    failed_ci = paused(attempt=2, retry_kind=RetryKind.CI_FAILURE, retry_context="### tests\nassert 1 == 2",
                       pr_number=3)
    edited = rules.edit_input(failed_ci, instructions="Use a dict.", now=NOW).task
    pending = rules.resume(edited, now=NOW).task
    assert pending.status is Status.PENDING

    fed = rules.feedback(pending, text="also the docs", author="bob", now=NOW).task
    attempt = AttemptContext.from_task(fed)
    assert attempt.instructions == "Use a dict."
    assert attempt.ci_log == "### tests\nassert 1 == 2"
    assert attempt.feedback == "bob wrote:\nalso the docs"
