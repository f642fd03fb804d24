"""Task rules (SPEC §3, §3.1, §3.2, §4.1, §4.2): pure decisions over :class:`Task` values.

Every function takes the current task (and ``now`` where time matters) and returns a
:class:`Decision`; nothing here reads a clock, does I/O or draws random numbers. The
reasons' words are templates in :mod:`bot.messages.reasons` (imported here, so
``rules.WORKER_LOST`` and the like still work); ``{bot}`` in them stands for the bot's
mention (:func:`render_reason`). No decision depends on a reason's wording.

Conventions the rules keep (where SPEC is silent):

- ``attempt`` is the number of the current attempt while ``running``, of the last attempt
  that ran while ``review``/``waiting``/``failed``, and of the next, not yet run, attempt
  while ``pending``/``paused``. So every attempt that runs has a new, higher number.
- A budget-counting retry raises ``attempt``; a free retry (feedback, conflict, transient,
  answers, a stopped attempt) raises ``attempt`` and ``max_attempts`` together, so
  ``max_attempts - attempt`` (the budget left) is unchanged.
- ``retry_kind``/``retry_context`` say what the next attempt must do. A redo after a
  transient or retryable error keeps them (the job is the same); ``retry_reason`` says why.
- Human-requested runs (feedback, answers, resume, manual retry) are refused with a reason
  when the cost cap is reached, instead of failing the task: the agent would be stopped at
  once (SPEC §6.4), and the PR stays for humans. Automatic retries fail the task (§3.2).
- Feedback that arrives while an attempt runs is queued; when the attempt ends in another
  attempt (push, retryable error, transient, resume) that next attempt is one feedback
  retry carrying all queued items (§3.2 last bullet).
- Worker reports (push, failure, no changes, transient, questions) may name the
  ``attempt`` they are about; a report about another attempt (a worker that was taken
  back, stopped, or raced a start over) is ignored with the reason.
- Decisions are made from one status: ``from_statuses`` is the old status. When the
  conditional update loses a race, re-read the task and decide again.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.messages.reasons import (
    A_MAINTAINER,
    ACTION_CANCEL,
    ACTION_CONTINUE_WITH_ANSWERS,
    ACTION_RESUME,
    ACTION_RETRY,
    ACTION_RETRY_WITH_FEEDBACK,
    ACTION_STOP,
    ACTION_USE_FEEDBACK,
    ALREADY_FINAL,
    ALREADY_HAS_TASK,
    ANSWER_EMPTY,
    ANSWERED,
    ANSWERS_RETRY_REASON,
    ATTEMPT_FAILED,
    BREAKER_TRIPPED,
    BUDGET_EXHAUSTED,
    BY,
    CANCELLED,
    CANNOT_EDIT,
    CI_FAILED_WHAT,
    CI_NOT_IN_REVIEW,
    CI_RETRY_REASON,
    CI_STALE,
    CLAIM_NOT_PENDING,
    CLAIM_TOO_EARLY,
    CLAIMED,
    CONFLICT_IGNORED,
    CONFLICT_LIMIT,
    CONFLICT_RETRY,
    CONFLICT_WHAT,
    COST_ADDED,
    COST_ADDED_OVER_CAP,
    COST_CAP_REACHED,
    EDIT_HINT,
    EDIT_UNCHANGED,
    EDITED,
    EDITED_AND,
    EDITED_INSTRUCTIONS,
    EDITED_SPEC,
    FAILED_THEN,
    FEEDBACK_EMPTY,
    FEEDBACK_LIMIT,
    FEEDBACK_MERGED,
    FEEDBACK_NO_PR,
    FEEDBACK_QUEUED,
    FEEDBACK_RETRY,
    FEEDBACK_RETRY_REASON,
    GIVING_UP_COST,
    ISSUE_CLOSED,
    MANUAL_RETRY,
    MANUAL_RETRY_DEFAULT_TEXT,
    MANUAL_RETRY_REASON,
    NEXT_STEP,
    NO_CHANGES,
    NO_CHANGES_FIRST,
    NO_COST,
    NO_SHA,
    NOT_RUNNING,
    NOT_WAITING,
    PR_CLOSED,
    PR_MERGED,
    PR_NOT_THE_TASKS,
    PUSH_RECORDED,
    QUESTIONS,
    QUEUED_COMMENTS,
    QUEUED_FEEDBACK_DROPPED,
    QUEUED_FEEDBACK_RETRY,
    RELABEL_MERGED,
    REPORT_FAILURE,
    REPORT_NO_CHANGES,
    REPORT_PUSH,
    REPORT_QUESTIONS,
    RESUMED,
    RETRYING,
    SOMEONE,
    SPEC_NOT_USED,
    SPEC_REFRESHED,
    SPEC_UNCHANGED,
    STALE_REPORT,
    STARTED_OVER,
    STARTED_OVER_BY_LABEL,
    STATE_WORDS,
    STOPPED,
    STOPPED_LABEL,
    THE_BASE_BRANCH,
    TRANSIENT_ERROR,
    TRANSIENT_LIMIT,
    TRANSIENT_RETRY,
    UNKNOWN_ERROR,
    UNLABEL_IGNORED,
    WORKER_LOST,
    brief,
    cannot,
    clause,
    cost_refusal,
    failed_reason,
    pushed_reason,
    say,
)
from bot.tasks.model import ACTIVE, RetryKind, Status, Task, plain_context_field
from bot.tasks.transitions import (
    ALLOWED_TRANSITIONS,
    MENTION_PLACEHOLDER,
    Decision,
    Effect,
    InvalidDecisionError,
    is_allowed,
    render_reason,
)

__all__ = [
    "ALLOWED_TRANSITIONS",
    "CIRCUIT_BREAKER_LIMIT",
    "CONFLICT_RETRY_LIMIT",
    "DEFAULT_MAX_ATTEMPTS",
    "FEEDBACK_RETRY_LIMIT",
    "MANUAL_RETRY_GRANT",
    "MENTION_PLACEHOLDER",
    "TRANSIENT_RETRY_LIMIT",
    "WORKER_LOST",
    "Decision",
    "Effect",
    "InvalidDecisionError",
    "TaskDefaults",
    "add_cost",
    "answered",
    "attempt_failed",
    "attempt_pushed",
    "cancel",
    "ci_category",
    "ci_failed",
    "claimed",
    "coalesce_feedback",
    "cost_gate",
    "edit_input",
    "feedback",
    "feedback_item",
    "instructions_of",
    "is_allowed",
    "issue_closed",
    "manual_retry",
    "merge_conflict",
    "new_task",
    "no_progress",
    "pr_closed",
    "pr_merged",
    "questions_asked",
    "relabeled",
    "render_reason",
    "resume",
    "spec_edited",
    "start_over",
    "stop",
    "transient",
    "transient_backoff",
    "unlabeled",
    "with_instructions",
    "worker_lost",
]

# -- limits (SPEC §3.2) --------------------------------------------------------------------

DEFAULT_MAX_ATTEMPTS = 5
CIRCUIT_BREAKER_LIMIT = 3  # the same failure category this many times in a row -> failed
FEEDBACK_RETRY_LIMIT = 20
CONFLICT_RETRY_LIMIT = 5  # consecutive conflict retries without a successful push
TRANSIENT_RETRY_LIMIT = 5  # consecutive transient retries
TRANSIENT_BACKOFF_BASE = timedelta(minutes=1)  # 1, 2, 4, 8, 16 min
MANUAL_RETRY_GRANT = 2  # a manual retry leaves at least this many automatic retries

CI_CATEGORY_PREFIX = "ci_failure:"
NO_CHANGES_CATEGORY_PREFIX = "no_changes:"
FEEDBACK_SEPARATOR = "\n\n---\n\n"

# -- decision builders -----------------------------------------------------------------------


def _refuse(task: Task, reason: str) -> Decision:
    return Decision(accepted=False, task=task, reason=reason, from_statuses=())


def _accept(old: Task, new: Task, reason: str, effects: Iterable[Effect] = (), *, now: datetime | None) -> Decision:
    """An accepted decision; housekeeping every transition shares is applied here.

    ``worker_id`` is set only while running (and on the pending task :func:`worker_lost`
    makes, until it is claimed or leaves pending).
    """
    if old.status is Status.RUNNING and new.status is not Status.RUNNING:
        new = new.replace(worker_id="", heartbeat_at=None)
    elif old.status is Status.PENDING and new.status not in (Status.PENDING, Status.RUNNING) and new.worker_id:
        new = new.replace(worker_id="")
    if new.status is not Status.PENDING:
        new = new.replace(not_before=None)
    if now is not None:
        new = new.replace(updated_at=now)
    out = list(dict.fromkeys(effects))
    if new.status is Status.PENDING and old.status is not Status.PENDING and Effect.WAKE_WORKERS not in out:
        out.append(Effect.WAKE_WORKERS)
    return Decision(
        accepted=True,
        task=new,
        reason=reason,
        from_statuses=(old.status,),
        effects=tuple(out),
        previous=old,
    )


def _fail(old: Task, new: Task, cause: str, *, now: datetime, close_reason: str | None = None) -> Decision:
    """``new`` moved to ``failed``; the close reason is ``cause`` unless given."""
    failed = new.replace(status=Status.FAILED, close_reason=cause if close_reason is None else close_reason)
    return _accept(old, failed, failed_reason(cause), now=now)


# -- cost ------------------------------------------------------------------------------------


def _with_cost(task: Task, usd: float) -> Task:
    if not math.isfinite(usd) or usd < 0:
        raise ValueError(f"cost must be a finite, non-negative amount, not {usd!r}")
    if usd == 0:
        return task
    return task.replace(cost_usd=round(task.cost_usd + usd, 6))


def cost_gate(task: Task) -> str | None:
    """Why no further automatic retry may run (the cost cap is reached), or None."""
    if task.cost_usd >= task.max_cost_usd:
        return COST_CAP_REACHED.format(cost=task.cost_usd, cap=task.max_cost_usd)
    return None


def add_cost(task: Task, usd: float) -> Decision:
    """Record ``usd`` more spent on the task (any status: money spent is spent).

    While running, reaching the cap adds STOP_AGENT (SPEC §6.4); the worker then reports
    the attempt's end as usual.
    """
    new = _with_cost(task, usd)
    if new == task:
        return _refuse(task, NO_COST)
    if task.status is Status.RUNNING and cost_gate(new):
        reason = COST_ADDED_OVER_CAP.format(usd=usd, cost=new.cost_usd, cap=new.max_cost_usd)
        return _accept(task, new, reason, (Effect.STOP_AGENT,), now=None)
    reason = COST_ADDED.format(usd=usd, cost=new.cost_usd, cap=new.max_cost_usd)
    return _accept(task, new, reason, now=None)


# -- feedback text ---------------------------------------------------------------------------


def feedback_item(text: str, author: str = "") -> str:
    """One feedback/answer item as the agent will read it."""
    text = text.strip()
    return f"{author} wrote:\n{text}" if author else text


def coalesce_feedback(items: Iterable[str]) -> str:
    """Several feedback items as one retry context: in order, empty and repeated ones dropped."""
    kept = dict.fromkeys(item.strip() for item in items)
    return FEEDBACK_SEPARATOR.join(item for item in kept if item)


def _fold_queued_feedback(task: Task) -> Task:
    """Turn queued feedback into the next attempt's job (a feedback retry). Budget untouched."""
    if not task.queued_feedback:
        return task
    context = coalesce_feedback(task.queued_feedback)
    if edited := _edited_instructions(task):  # an edit while paused rides along
        context = with_instructions(RetryKind.FEEDBACK, context, edited)
    return task.replace(
        retry_kind=RetryKind.FEEDBACK,
        retry_context=context,
        retry_reason=say(FEEDBACK_RETRY_REASON, author=QUEUED_COMMENTS),
        queued_feedback=(),
        feedback_retries=task.feedback_retries + 1,
        consecutive_failures=0,
    )


# -- creation and starting over --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """Per-repo values a new (or restarted) task takes (from .github/patchwright.yml)."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_cost_usd: float = 10.0
    agent: str = ""
    model: str = ""
    base_branch: str = ""


def _check_cap(max_cost_usd: float | None) -> None:
    if max_cost_usd is not None and not (math.isfinite(max_cost_usd) and max_cost_usd >= 0):
        raise ValueError(f"max_cost_usd must be a finite, non-negative amount, not {max_cost_usd!r}")


def _check_budget(max_attempts: int, max_cost_usd: float | None = None) -> None:
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    _check_cap(max_cost_usd)


def new_task(
    *,
    id: str,  # noqa: A002 - the Task field's name
    repo: str,
    installation_id: int,
    issue_number: int,
    title: str,
    spec: str,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_cost_usd: float,
    agent: str,
    model: str,
    base_branch: str,
    now: datetime,
    instructions: str = "",
) -> Task:
    """A new pending task: attempt 1, retry kind ``first``; ``instructions`` (a ``retry``
    comment's text, say) go to the first attempt's prompt."""
    _check_budget(max_attempts, max_cost_usd)
    return Task(
        id=id,
        repo=repo,
        installation_id=installation_id,
        issue_number=issue_number,
        title=title,
        spec=spec,
        status=Status.PENDING,
        attempt=1,
        max_attempts=max_attempts,
        retry_kind=RetryKind.FIRST,
        retry_context=with_instructions(RetryKind.FIRST, "", instructions),
        max_cost_usd=max_cost_usd,
        agent=agent,
        model=model,
        base_branch=base_branch,
        created_at=now,
        updated_at=now,
    )


def claimed(task: Task, *, worker_id: str, now: datetime) -> Decision:
    """A worker takes a pending task whose backoff has passed (the store's claim does the same)."""
    if task.status is not Status.PENDING:
        return _refuse(task, CLAIM_NOT_PENDING.format(state=STATE_WORDS[task.status]))
    if task.not_before is not None and now < task.not_before:
        return _refuse(task, CLAIM_TOO_EARLY.format(not_before=task.not_before))
    new = task.replace(status=Status.RUNNING, worker_id=worker_id, heartbeat_at=now, started_at=now, not_before=None)
    return _accept(task, new, CLAIMED.format(attempt=task.attempt, worker=worker_id), now=now)


def _reset(
    task: Task,
    *,
    max_attempts: int,
    title: str | None,
    spec: str | None,
    max_cost_usd: float | None,
    agent: str | None,
    model: str | None,
    base_branch: str | None,
) -> Task:
    _check_budget(max_attempts, max_cost_usd)
    return task.replace(
        status=Status.PENDING,
        title=task.title if title is None else title,
        spec=task.spec if spec is None else spec,
        attempt=1,
        max_attempts=max_attempts,
        retry_kind=RetryKind.FIRST,
        retry_reason="",
        retry_context="",
        failure_category="",
        consecutive_failures=0,
        conflict_retries=0,
        transient_retries=0,
        feedback_retries=0,
        queued_feedback=(),
        last_error_signature="",
        cost_usd=0.0,
        max_cost_usd=task.max_cost_usd if max_cost_usd is None else max_cost_usd,
        branch="",
        pr_number=None,
        pr_url="",
        head_sha="",
        agent=task.agent if agent is None else agent,
        model=task.model if model is None else model,
        base_branch=task.base_branch if base_branch is None else base_branch,
        agent_session="",
        not_before=None,
        worker_id="",
        heartbeat_at=None,
        started_at=None,
        close_reason="",
    )


def _start_over_effects(task: Task) -> list[Effect]:
    effects = []
    if task.status is Status.RUNNING:
        effects.append(Effect.STOP_AGENT)
    if task.pr_number is not None and task.status is not Status.MERGED:
        effects.append(Effect.CLOSE_PR)
    if task.branch:
        effects.append(Effect.DELETE_BRANCH)
    effects.append(Effect.WAKE_WORKERS)
    return effects


def start_over(
    task: Task,
    *,
    max_attempts: int,
    now: datetime,
    title: str | None = None,
    spec: str | None = None,
    max_cost_usd: float | None = None,
    agent: str | None = None,
    model: str | None = None,
    base_branch: str | None = None,
) -> Decision:
    """Any status -> pending at attempt 1 with counters, cost, PR, branch and session cleared.

    Effects: STOP_AGENT when running, CLOSE_PR when there was an unmerged PR (a merged one
    stays merged), DELETE_BRANCH when there was a branch (the new first attempt reuses the
    branch name), WAKE_WORKERS. ``None`` keeps a field's current value.
    """
    new = _reset(
        task,
        max_attempts=max_attempts,
        title=title,
        spec=spec,
        max_cost_usd=max_cost_usd,
        agent=agent,
        model=model,
        base_branch=base_branch,
    )
    return _accept(task, new, STARTED_OVER.format(max=max_attempts), _start_over_effects(task), now=now)


def relabeled(task: Task, *, title: str, spec: str, defaults: TaskDefaults, now: datetime) -> Decision:
    """The trigger label was added to an issue that already has a task (SPEC §4.1).

    Active task: nothing new. ``failed``/``closed``: start over with the issue's current text
    and the repo's current defaults. ``merged``: refused (the work landed; re-adding a label
    is too easy to do by accident to throw a merged result away -- ``start over`` does it).
    """
    if task.status in ACTIVE:
        return _refuse(task, ALREADY_HAS_TASK.format(issue=task.issue_number, state=STATE_WORDS[task.status]))
    if task.status is Status.MERGED:
        return _refuse(task, say(RELABEL_MERGED))
    new = _reset(
        task,
        max_attempts=defaults.max_attempts,
        title=title,
        spec=spec,
        max_cost_usd=defaults.max_cost_usd,
        agent=defaults.agent,
        model=defaults.model,
        base_branch=defaults.base_branch or task.base_branch,
    )
    reason = STARTED_OVER_BY_LABEL.format(max=defaults.max_attempts)
    return _accept(task, new, reason, _start_over_effects(task), now=now)


# -- retries ---------------------------------------------------------------------------------


def ci_category(failing_checks: Iterable[str]) -> str:
    """``ci_failure:`` + the sorted, distinct check names joined by ``,`` (SPEC §3.2)."""
    names = sorted({name.strip() for name in failing_checks if name.strip()})
    if not names:
        raise ValueError("a CI failure needs at least one failing check name")
    return CI_CATEGORY_PREFIX + ",".join(names)


def _budget_retry(
    old: Task,
    task: Task,
    *,
    what: str,
    category: str,
    signature: str,
    kind: RetryKind,
    retry_reason: str,
    context: str,
    now: datetime,
) -> Decision:
    """An automatic, budget-counting retry of ``task`` (``old`` with the event's facts applied).

    In order: cost gate, circuit breaker (the same category -- or the same error signature
    as the previous attempt -- CIRCUIT_BREAKER_LIMIT times in a row), budget (attempt + 1
    must not exceed max_attempts). The counters are recorded even when the task fails.
    """
    gate = cost_gate(task)
    if gate:
        return _fail(old, task, say(GIVING_UP_COST, what=what, gate=gate), now=now)
    repeated = category == task.failure_category or (signature != "" and signature == task.last_error_signature)
    consecutive = task.consecutive_failures + 1 if repeated else 1
    task = task.replace(failure_category=category, consecutive_failures=consecutive, last_error_signature=signature)
    if consecutive >= CIRCUIT_BREAKER_LIMIT:
        return _fail(old, task, say(BREAKER_TRIPPED, what=what, count=consecutive), now=now)
    if task.attempt + 1 > task.max_attempts:
        return _fail(old, task, say(BUDGET_EXHAUSTED, what=what, attempt=task.attempt, max=task.max_attempts), now=now)
    new = task.replace(
        status=Status.PENDING,
        attempt=task.attempt + 1,
        retry_kind=kind,
        retry_reason=retry_reason,
        retry_context=context,
    )
    return _accept(old, new, say(RETRYING, what=what, attempt=new.attempt, max=new.max_attempts), now=now)


def _free_retry(task: Task) -> Task:
    """Pending with attempt + 1 and max_attempts + 1: a retry outside the budget."""
    return task.replace(status=Status.PENDING, attempt=task.attempt + 1, max_attempts=task.max_attempts + 1)


def ci_failed(task: Task, *, failing_checks: Iterable[str], head_sha: str, context: str, now: datetime) -> Decision:
    """Required checks failed on a PR head (SPEC §3.2, §4.3): a budget-counting CI retry.

    Only for a task in review and only for the head the bot pushed; anything else is
    ignored with the reason. Once per head: the retry leaves ``review``, so the same
    failure reported again by another event kind is ignored.
    """
    category = ci_category(failing_checks)
    if task.status is not Status.REVIEW:
        return _refuse(task, CI_NOT_IN_REVIEW.format(state=STATE_WORDS[task.status]))
    if not head_sha or head_sha != task.head_sha:
        return _refuse(task, CI_STALE.format(sha=head_sha[:7] or NO_SHA, head=task.head_sha[:7] or NO_SHA))
    checks = ", ".join(category.removeprefix(CI_CATEGORY_PREFIX).split(","))
    return _budget_retry(
        task,
        task,
        what=CI_FAILED_WHAT.format(checks=checks),
        category=category,
        signature="",
        kind=RetryKind.CI_FAILURE,
        retry_reason=CI_RETRY_REASON.format(checks=checks),
        context=context,
        now=now,
    )


def feedback(task: Task, *, text: str, author: str, now: datetime, limit: int = FEEDBACK_RETRY_LIMIT) -> Decision:
    """A human's review or PR comment for the agent (SPEC §3.2, §4.4).

    ``review``: a feedback retry outside the budget (attempt + 1 and max + 1), at most
    ``limit`` per task. ``running``: queued for when the attempt ends. ``pending`` with a PR:
    added to the queued attempt's context. Feedback resets the CI circuit breaker (a human
    changed direction). Refused when the cost cap is reached (see the module docstring).
    """
    if not text.strip():
        return _refuse(task, FEEDBACK_EMPTY)
    who = author or SOMEONE
    item = feedback_item(text, author)
    if task.status in (Status.REVIEW, Status.RUNNING, Status.PENDING) and task.pr_number is None:
        return _refuse(task, say(FEEDBACK_NO_PR, hint=say(NEXT_STEP[task.status])))
    if task.status is Status.REVIEW:
        if task.feedback_retries >= limit:
            return _refuse(task, say(FEEDBACK_LIMIT, limit=limit))
        if cost_gate(task):
            return _refuse(task, cost_refusal(ACTION_RETRY_WITH_FEEDBACK, task))
        new = _free_retry(task).replace(
            retry_kind=RetryKind.FEEDBACK,
            retry_reason=FEEDBACK_RETRY_REASON.format(author=who),
            retry_context=item,
            feedback_retries=task.feedback_retries + 1,
            consecutive_failures=0,
        )
        return _accept(task, new, FEEDBACK_RETRY.format(author=who, attempt=new.attempt), now=now)
    if task.status is Status.RUNNING:
        if task.feedback_retries >= limit:
            return _refuse(task, say(FEEDBACK_LIMIT, limit=limit))
        new = task.replace(queued_feedback=task.queued_feedback + (item,))
        return _accept(task, new, FEEDBACK_QUEUED.format(author=who, attempt=task.attempt), now=now)
    if task.status is Status.PENDING:
        new = task.replace(
            retry_context=with_feedback(task.retry_kind, task.retry_context, item),
            consecutive_failures=0,
        )
        return _accept(task, new, FEEDBACK_MERGED.format(author=who, attempt=task.attempt), now=now)
    return _refuse(task, cannot(ACTION_USE_FEEDBACK, task))


def _conflict_retry(old: Task, task: Task, *, now: datetime, limit: int) -> Decision:
    """A merge-conflict retry outside the budget; the CI breaker is left alone."""
    base = task.base_branch or THE_BASE_BRANCH
    what = CONFLICT_WHAT.format(base=base)
    gate = cost_gate(task)
    if gate:
        return _fail(old, task, say(GIVING_UP_COST, what=what, gate=gate), now=now)
    if task.conflict_retries >= limit:
        return _fail(old, task, CONFLICT_LIMIT.format(base=base, limit=task.conflict_retries), now=now)
    new = _free_retry(task).replace(
        retry_kind=RetryKind.MERGE_CONFLICT,
        retry_reason=what,
        retry_context="",
        conflict_retries=task.conflict_retries + 1,
    )
    return _accept(old, new, CONFLICT_RETRY.format(base=base, attempt=new.attempt), now=now)


def merge_conflict(task: Task, *, now: datetime, limit: int = CONFLICT_RETRY_LIMIT) -> Decision:
    """The PR's ``mergeable_state`` is ``dirty`` (SPEC §3.2, §4.5): a conflict retry from review.

    Outside the budget (attempt + 1 and max + 1); more than ``limit`` conflict retries in a
    row without a successful push -> failed. Never touches the CI breaker's counters.
    """
    if task.status is not Status.REVIEW:
        return _refuse(task, CONFLICT_IGNORED.format(state=STATE_WORDS[task.status]))
    return _conflict_retry(task, task, now=now, limit=limit)


def transient_backoff(retry_number: int) -> timedelta:
    """The wait before the ``retry_number``-th consecutive transient retry: 1, 2, 4, 8, 16 min…"""
    if retry_number < 1:
        raise ValueError("retry numbers start at 1")
    return TRANSIENT_BACKOFF_BASE * (2 ** (retry_number - 1))


def _report_refusal(task: Task, what: str, attempt: int | None) -> str | None:
    """Why a worker's report about the end of ``attempt`` does not apply to ``task``, or None.

    ``attempt`` None means the caller does not know which attempt it reports on (the
    reconciler's lost-worker check): only the status is checked then.
    """
    if task.status is not Status.RUNNING:
        return NOT_RUNNING.format(what=what, state=STATE_WORDS[task.status])
    if attempt is not None and attempt != task.attempt:
        return STALE_REPORT.format(what=what, attempt=attempt, current=task.attempt)
    return None


def _end_attempt(task: Task, *, cost_usd: float, agent_session: str | None) -> Task:
    task = _with_cost(task, cost_usd)
    if agent_session is not None:
        task = task.replace(agent_session=agent_session)
    return task


def transient(
    task: Task,
    *,
    reason: str,
    now: datetime,
    limit: int = TRANSIENT_RETRY_LIMIT,
    cost_usd: float = 0.0,
    agent_session: str | None = None,
    attempt: int | None = None,
) -> Decision:
    """The attempt hit a rate limit, provider overload, or its worker was lost (see
    :func:`worker_lost`): not the task's fault (SPEC §3.2, §6.1).

    ``running`` -> pending after 1, 2, 4, 8, 16 minutes for the 1st..5th in a row, outside
    the budget; the next one in a row -> failed. The cost gate runs first.
    """
    what = clause(brief(reason)) or TRANSIENT_ERROR
    if refusal := _report_refusal(task, what, attempt):
        return _refuse(task, refusal)
    ended = _end_attempt(task, cost_usd=cost_usd, agent_session=agent_session)
    gate = cost_gate(ended)
    if gate:
        return _fail(task, ended, say(GIVING_UP_COST, what=what, gate=gate), now=now)
    if ended.transient_retries >= limit:
        return _fail(task, ended, TRANSIENT_LIMIT.format(what=what, limit=ended.transient_retries), now=now)
    number = ended.transient_retries + 1
    at = now + transient_backoff(number)
    new = _fold_queued_feedback(
        _free_retry(ended).replace(
            transient_retries=number,
            not_before=at,
            retry_reason=TRANSIENT_RETRY.format(what=what, at=at, attempt=ended.attempt + 1),
        )
    )
    return _accept(task, new, TRANSIENT_RETRY.format(what=what, at=at, attempt=new.attempt), now=now)


def worker_lost(task: Task, *, now: datetime, attempt: int | None = None) -> Decision:
    """The worker running ``attempt`` stopped sending heartbeats and the task is taken back.

    The same decision as ``transient(task, reason=WORKER_LOST, now=now, attempt=attempt)``,
    except that a task sent back to ``pending`` keeps ``worker_id``: the worker that lost
    it. That worker, comparing ``worker_id`` with its own id, can tell that the task was
    taken back from it without reading the reason's words. The next claim (or the task
    leaving ``pending`` another way) replaces it.
    """
    decision = transient(task, reason=WORKER_LOST, now=now, attempt=attempt)
    if not decision.accepted or decision.task.status is not Status.PENDING:
        return decision
    return dataclasses.replace(decision, task=decision.task.replace(worker_id=task.worker_id))


def _retryable_failure(
    task: Task, ended: Task, *, what: str, category: str, signature: str, now: datetime, conflict_limit: int
) -> Decision:
    """The attempt failed in a way another attempt may fix (``ended``: cost etc. applied)."""
    ended = ended.replace(transient_retries=0)
    if ended.queued_feedback:
        gate = cost_gate(ended)
        if gate:
            return _fail(task, ended, say(GIVING_UP_COST, what=what, gate=gate), now=now)
        folded = _fold_queued_feedback(_free_retry(ended)).replace(last_error_signature=signature)
        reason = QUEUED_FEEDBACK_RETRY.format(count=len(ended.queued_feedback), attempt=folded.attempt)
        return _accept(task, folded, FAILED_THEN.format(what=what, then=reason), now=now)
    if ended.retry_kind is RetryKind.MERGE_CONFLICT:
        return _conflict_retry(task, ended.replace(last_error_signature=signature), now=now, limit=conflict_limit)
    return _budget_retry(
        task,
        ended,
        what=what,
        category=category,
        signature=signature,
        kind=ended.retry_kind,
        retry_reason=what,
        context=ended.retry_context,
        now=now,
    )


def attempt_failed(
    task: Task,
    *,
    error: str,
    category: str,
    error_signature: str = "",
    retryable: bool,
    now: datetime,
    cost_usd: float = 0.0,
    agent_session: str | None = None,
    conflict_limit: int = CONFLICT_RETRY_LIMIT,
    attempt: int | None = None,
) -> Decision:
    """The running attempt ended with an error (SPEC §3.2, §6.5).

    Not retryable (configuration error, refused secret, no changes on the first attempt…)
    -> failed with ``error`` as the close reason. Retryable -> the same job again as a
    budget-counting retry (cost gate, breaker, budget as for CI); an ``error_signature``
    equal to the previous attempt's counts as a repeat even under another category
    (no-progress breaker). Exceptions: queued feedback makes the next attempt a feedback
    retry; a failed conflict attempt is retried as a conflict retry (outside the budget,
    ``conflict_limit`` in a row without a push).
    """
    if refusal := _report_refusal(task, REPORT_FAILURE, attempt):
        return _refuse(task, refusal)
    ended = _end_attempt(task, cost_usd=cost_usd, agent_session=agent_session)
    what = ATTEMPT_FAILED.format(attempt=task.attempt, error=clause(brief(error)) or UNKNOWN_ERROR)
    if not retryable:
        failed = ended.replace(last_error_signature=error_signature)
        return _fail(task, failed, what, now=now, close_reason=error.strip() or what)
    return _retryable_failure(
        task, ended, what=what, category=category, signature=error_signature, now=now, conflict_limit=conflict_limit
    )


def no_progress(
    task: Task,
    *,
    now: datetime,
    cost_usd: float = 0.0,
    agent_session: str | None = None,
    conflict_limit: int = CONFLICT_RETRY_LIMIT,
    attempt: int | None = None,
) -> Decision:
    """The running attempt produced no diff against the previous head (SPEC §3.2, §6.5).

    Nothing pushed yet (a first attempt) -> failed ("the agent made no changes"). Otherwise a
    retryable failure counted as a repeat of the attempt's own category: the CI category
    for a CI retry (so a fix that changes nothing trips the breaker), else
    ``no_changes:<retry kind>``.
    """
    if refusal := _report_refusal(task, REPORT_NO_CHANGES, attempt):
        return _refuse(task, refusal)
    ended = _end_attempt(task, cost_usd=cost_usd, agent_session=agent_session)
    if not task.head_sha:
        return _fail(task, ended, NO_CHANGES_FIRST, now=now)
    if task.retry_kind is RetryKind.CI_FAILURE and task.failure_category:
        category = task.failure_category
    else:
        category = NO_CHANGES_CATEGORY_PREFIX + str(task.retry_kind)
    what = ATTEMPT_FAILED.format(attempt=task.attempt, error=NO_CHANGES)
    return _retryable_failure(
        task, ended, what=what, category=category, signature="", now=now, conflict_limit=conflict_limit
    )


def attempt_pushed(
    task: Task,
    *,
    head_sha: str,
    pr_number: int,
    pr_url: str,
    branch: str,
    cost_usd: float = 0.0,
    summary: str = "",
    now: datetime,
    agent_session: str | None = None,
    attempt: int | None = None,
) -> Decision:
    """The running attempt pushed ``head_sha`` and the PR exists: running -> review.

    Records head, PR and branch; a successful push ends the conflict and transient streaks
    and the previous error signature. Queued feedback sends the task straight back to
    pending as one coalesced feedback retry (SPEC §3.2) unless the cost cap is reached.
    ``attempt`` is the number of the attempt that pushed: a push that lands just after that
    attempt was stopped or taken back (paused/pending at ``attempt + 1``) is still recorded,
    so the task knows its PR and head; without ``attempt`` such a push is ignored (it might
    be from before a start over). ``cost_usd`` is the attempt's cost not yet recorded with
    :func:`add_cost`.
    """
    if not head_sha or pr_number < 1:
        raise ValueError("a push needs a head SHA and a PR number")
    facts = {"head_sha": head_sha, "pr_number": pr_number, "pr_url": pr_url, "branch": branch}
    what = REPORT_PUSH.format(sha=head_sha[:7])
    late = task.status in (Status.PAUSED, Status.PENDING)
    if late and attempt is not None and task.attempt == attempt + 1:
        new = _end_attempt(task, cost_usd=cost_usd, agent_session=agent_session).replace(**facts)
        reason = PUSH_RECORDED.format(sha=head_sha[:7], pr=pr_number, state=STATE_WORDS[task.status])
        return _accept(task, new, reason, now=now)
    if refusal := _report_refusal(task, what, attempt):
        return _refuse(task, refusal)
    reason = pushed_reason(attempt=task.attempt, sha=head_sha[:7], pr=pr_number, summary=summary)
    pushed = _end_attempt(task, cost_usd=cost_usd, agent_session=agent_session).replace(
        status=Status.REVIEW,
        transient_retries=0,
        conflict_retries=0,
        last_error_signature="",
        **facts,
    )
    if not pushed.queued_feedback:
        return _accept(task, pushed, reason, now=now)
    gate = cost_gate(pushed)
    if gate:
        dropped = QUEUED_FEEDBACK_DROPPED.format(count=len(pushed.queued_feedback), gate=gate)
        return _accept(task, pushed.replace(queued_feedback=()), reason + dropped, now=now)
    new = _fold_queued_feedback(_free_retry(pushed))
    queued = QUEUED_FEEDBACK_RETRY.format(count=len(pushed.queued_feedback), attempt=new.attempt)
    return _accept(task, new, f"{reason} {queued}", now=now)


def questions_asked(
    task: Task,
    *,
    questions: Sequence[str],
    now: datetime,
    cost_usd: float = 0.0,
    agent_session: str | None = None,
    attempt: int | None = None,
) -> Decision:
    """The agent asked questions (SPEC §6.3): running -> waiting, POST_QUESTIONS."""
    if not questions:
        raise ValueError("questions_asked needs at least one question")
    if refusal := _report_refusal(task, REPORT_QUESTIONS, attempt):
        return _refuse(task, refusal)
    new = _end_attempt(task, cost_usd=cost_usd, agent_session=agent_session).replace(
        status=Status.WAITING, transient_retries=0
    )
    return _accept(task, new, QUESTIONS.format(count=len(questions)), (Effect.POST_QUESTIONS,), now=now)


def answered(task: Task, *, text: str, now: datetime, author: str = "") -> Decision:
    """A human answered the agent's questions: waiting -> pending (``answers``, outside the budget).

    Feedback queued before the questions were asked rides along in the context.
    """
    if task.status is not Status.WAITING:
        return _refuse(task, NOT_WAITING.format(state=STATE_WORDS[task.status]))
    if not text.strip():
        return _refuse(task, ANSWER_EMPTY)
    if cost_gate(task):
        return _refuse(task, cost_refusal(ACTION_CONTINUE_WITH_ANSWERS, task))
    who = author or A_MAINTAINER
    new = _free_retry(task).replace(
        retry_kind=RetryKind.ANSWERS,
        retry_reason=ANSWERS_RETRY_REASON.format(author=who),
        retry_context=coalesce_feedback((feedback_item(text, author), *task.queued_feedback)),
        queued_feedback=(),
    )
    return _accept(task, new, ANSWERED.format(author=who, attempt=new.attempt), now=now)


# -- commands ----------------------------------------------------------------------------------


def manual_retry(
    task: Task,
    *,
    instructions: str = "",
    now: datetime,
    author: str = "",
    max_cost_usd: float | None = None,
    feedback_limit: int = FEEDBACK_RETRY_LIMIT,
) -> Decision:
    """``retry [instructions]`` (SPEC §3.2, §4.2).

    ``failed``/``paused`` -> pending, kind ``manual``: breaker, conflict and transient
    counters reset; ``max_attempts`` becomes at least new attempt + 2. A failed task's
    attempt ran, so the new attempt is attempt + 1; a paused task's attempt has not run
    yet and keeps its number. ``max_cost_usd`` (the repo's current cap) may raise the
    task's cap; with the cap still reached the retry is refused. ``review`` -> a feedback
    retry with the instructions. Other statuses are refused.
    """
    if task.status not in (Status.FAILED, Status.PAUSED, Status.REVIEW):
        return _refuse(task, cannot(ACTION_RETRY, task))
    _check_cap(max_cost_usd)
    cap = max(task.max_cost_usd, max_cost_usd if max_cost_usd is not None else 0.0)
    raised = task.replace(max_cost_usd=cap)
    if task.status is Status.REVIEW:
        text = instructions if instructions.strip() else MANUAL_RETRY_DEFAULT_TEXT
        as_feedback = feedback(raised, text=text, author=author, now=now, limit=feedback_limit)
        if not as_feedback.accepted:
            return _refuse(task, as_feedback.reason)
        return _accept(task, as_feedback.task, as_feedback.reason, as_feedback.effects, now=now)
    if cost_gate(raised):
        return _refuse(task, cost_refusal(ACTION_RETRY, raised))
    attempt = task.attempt + 1 if task.status is Status.FAILED else task.attempt
    by = BY.format(author=author) if author else ""
    asked = feedback_item(instructions, author) if instructions.strip() else _edited_instructions(task)
    new = raised.replace(
        status=Status.PENDING,
        attempt=attempt,
        max_attempts=max(task.max_attempts, attempt + MANUAL_RETRY_GRANT),
        retry_kind=RetryKind.MANUAL,
        retry_reason=MANUAL_RETRY_REASON.format(by=by),
        retry_context=coalesce_feedback((asked, *task.queued_feedback)),
        queued_feedback=(),
        failure_category="",
        consecutive_failures=0,
        conflict_retries=0,
        transient_retries=0,
        last_error_signature="",
        close_reason="",
    )
    return _accept(task, new, MANUAL_RETRY.format(by=by, attempt=new.attempt, max=new.max_attempts), now=now)


def _pause(task: Task, reason: str, *, now: datetime) -> Decision:
    """pending/running/waiting -> paused. A running or waiting task's attempt is over, so the
    attempt number moves on (attempt + 1 and max + 1: a stop costs no budget)."""
    if task.status is Status.PENDING:
        return _accept(task, task.replace(status=Status.PAUSED), reason, now=now)
    new = task.replace(status=Status.PAUSED, attempt=task.attempt + 1, max_attempts=task.max_attempts + 1)
    effects = (Effect.STOP_AGENT,) if task.status is Status.RUNNING else ()
    return _accept(task, new, reason, effects, now=now)


def stop(task: Task, *, now: datetime, author: str = "") -> Decision:
    """``stop``: pending/running/waiting -> paused (STOP_AGENT when running; SPEC §4.2).

    In review nothing runs: refused with a pointer to ``cancel`` (pausing a task whose PR
    waits for humans would only hide CI failures from the retry rules).
    """
    if task.status not in (Status.PENDING, Status.RUNNING, Status.WAITING):
        return _refuse(task, cannot(ACTION_STOP, task))
    return _pause(task, STOPPED.format(who=author or A_MAINTAINER), now=now)


def unlabeled(task: Task, *, now: datetime) -> Decision:
    """The trigger label was removed (SPEC §4.1): pending/running -> paused, like ``stop``."""
    if task.status not in (Status.PENDING, Status.RUNNING):
        return _refuse(task, UNLABEL_IGNORED.format(state=STATE_WORDS[task.status]))
    return _pause(task, STOPPED_LABEL, now=now)


def resume(task: Task, *, now: datetime) -> Decision:
    """``resume``: paused -> pending; the same job continues (queued feedback joins it)."""
    if task.status is not Status.PAUSED:
        return _refuse(task, cannot(ACTION_RESUME, task))
    if cost_gate(task):
        return _refuse(task, cost_refusal(ACTION_RESUME, task))
    new = _fold_queued_feedback(task.replace(status=Status.PENDING))
    return _accept(task, new, RESUMED.format(attempt=new.attempt, max=new.max_attempts), now=now)


def cancel(task: Task, *, now: datetime, author: str = "") -> Decision:
    """``cancel``: any non-terminal or failed task -> closed; STOP_AGENT (if running),
    CLOSE_PR (if there is a PR), DELETE_BRANCH (if there is a branch)."""
    if task.status in (Status.MERGED, Status.CLOSED):
        return _refuse(task, cannot(ACTION_CANCEL, task))
    effects = []
    if task.status is Status.RUNNING:
        effects.append(Effect.STOP_AGENT)
    if task.pr_number is not None:
        effects.append(Effect.CLOSE_PR)
    if task.branch:
        effects.append(Effect.DELETE_BRANCH)
    reason = CANCELLED.format(by=BY.format(author=author) if author else "")
    return _accept(task, task.replace(status=Status.CLOSED, close_reason=reason), reason, effects, now=now)


def _close(task: Task, reason: str, *, now: datetime) -> Decision:
    effects = (Effect.STOP_AGENT,) if task.status is Status.RUNNING else ()
    return _accept(task, task.replace(status=Status.CLOSED, close_reason=reason), reason, effects, now=now)


def issue_closed(task: Task, *, now: datetime) -> Decision:
    """The issue was closed (SPEC §4.1): non-terminal or failed -> closed, STOP_AGENT if running.

    The PR is left to humans. A failed task is closed too: with the issue closed there is
    nothing left to retry.
    """
    if task.status in (Status.MERGED, Status.CLOSED):
        return _refuse(task, ALREADY_FINAL.format(state=STATE_WORDS[task.status]))
    return _close(task, ISSUE_CLOSED, now=now)


def pr_merged(task: Task, *, pr_number: int, now: datetime) -> Decision:
    """The task's PR was merged (SPEC §4.5): any other status -> merged (STOP_AGENT if running).

    A closed or failed task becomes merged too: the work landed after all.
    """
    if task.pr_number is None or pr_number != task.pr_number:
        return _refuse(task, PR_NOT_THE_TASKS.format(pr=pr_number))
    if task.status is Status.MERGED:
        return _refuse(task, ALREADY_FINAL.format(state=STATE_WORDS[task.status]))
    effects = (Effect.STOP_AGENT,) if task.status is Status.RUNNING else ()
    reason = PR_MERGED.format(pr=pr_number)
    return _accept(task, task.replace(status=Status.MERGED, close_reason=reason), reason, effects, now=now)


def pr_closed(task: Task, *, pr_number: int, now: datetime) -> Decision:
    """The task's PR was closed unmerged (SPEC §4.5): non-terminal or failed -> closed."""
    if task.pr_number is None or pr_number != task.pr_number:
        return _refuse(task, PR_NOT_THE_TASKS.format(pr=pr_number))
    if task.status in (Status.MERGED, Status.CLOSED):
        return _refuse(task, ALREADY_FINAL.format(state=STATE_WORDS[task.status]))
    return _close(task, PR_CLOSED.format(pr=pr_number), now=now)


def spec_edited(task: Task, *, title: str, spec: str, now: datetime) -> Decision:
    """The issue was edited by a permitted sender (SPEC §4.1): pending/paused/waiting tasks
    work from the new title and text; otherwise the edit is ignored with the reason."""
    if task.status not in (Status.PENDING, Status.PAUSED, Status.WAITING):
        return _refuse(task, say(SPEC_NOT_USED, state=STATE_WORDS[task.status]))
    if title == task.title and spec == task.spec:
        return _refuse(task, SPEC_UNCHANGED)
    return _accept(task, task.replace(title=title, spec=spec), SPEC_REFRESHED, now=now)


# -- editing a paused task's input -------------------------------------------------------------


def _context_object(kind: RetryKind, context: str) -> dict[str, object]:
    """``retry_context`` as the JSON object form the prompt reads (its fields by name)."""
    if not context.strip():
        return {}
    try:
        data = json.loads(context)
    except ValueError:
        data = None
    if isinstance(data, dict):
        return dict(data)
    field = plain_context_field(kind)
    if field == "conflicted_files":
        return {field: [line.strip() for line in context.splitlines() if line.strip()]}
    return {field: context}


def instructions_of(task: Task) -> str:
    """The maintainer's instructions the next attempt's prompt carries ("" when none)."""
    value = _context_object(task.retry_kind, task.retry_context).get("instructions", "")
    return value if isinstance(value, str) else ""


def _edited_instructions(task: Task) -> str:
    """Instructions set by :func:`edit_input` (a JSON context), which a resume or a retry
    without instructions keeps; "" otherwise."""
    context = task.retry_context.strip()
    return instructions_of(task) if context.startswith("{") else ""


def with_feedback(kind: RetryKind, context: str, item: str) -> str:
    """``context`` (of an attempt of ``kind``) with one more feedback ``item``. A JSON context
    (an edit made it) keeps its fields and gains the item under ``feedback``; plain text gets
    the item appended, as before edits existed."""
    if not context.strip().startswith("{"):
        return coalesce_feedback((context, item))
    data = _context_object(kind, context)
    earlier = data.get("feedback")
    data["feedback"] = coalesce_feedback((earlier if isinstance(earlier, str) else "", item))
    return json.dumps(data, ensure_ascii=False)


def with_instructions(kind: RetryKind, context: str, instructions: str) -> str:
    """``context`` (of an attempt of ``kind``) with ``instructions`` as the maintainer's
    instructions (replacing any; "" removes them), as a JSON object the prompt reads; the
    rest of the context (a CI log, feedback, conflicted files…) is kept."""
    data = _context_object(kind, context)
    if instructions.strip():
        data["instructions"] = instructions.strip()
    else:
        data.pop("instructions", None)
    return json.dumps(data, ensure_ascii=False) if data else ""


def edit_input(
    task: Task,
    *,
    spec: str | None = None,
    instructions: str | None = None,
    author: str = "",
    now: datetime,
) -> Decision:
    """Edit a paused task's input: ``spec`` replaces the issue text the agent works from,
    ``instructions`` the maintainer's instructions of the next attempt ("" removes them);
    None leaves a field as it is. Only while paused (any other status is refused with what
    to do); ``resume`` (or ``retry`` without instructions) then starts from the new input.
    Refused when nothing changes."""
    if task.status is not Status.PAUSED:
        hint = say(EDIT_HINT[task.status])
        return _refuse(task, say(CANNOT_EDIT, state=STATE_WORDS[task.status], hint=hint))
    new, edited = task, []
    if spec is not None and spec != task.spec:
        new = new.replace(spec=spec)
        edited.append(EDITED_SPEC.format(before=len(task.spec), after=len(spec)))
    before = instructions_of(task)
    if instructions is not None and instructions.strip() != before:
        new = new.replace(retry_context=with_instructions(task.retry_kind, task.retry_context, instructions))
        edited.append(EDITED_INSTRUCTIONS.format(before=len(before), after=len(instructions.strip())))
    if not edited:
        return _refuse(task, EDIT_UNCHANGED)
    reason = say(EDITED, who=author or A_MAINTAINER, what=EDITED_AND.join(edited), attempt=new.attempt)
    return _accept(task, new, reason, now=now)
