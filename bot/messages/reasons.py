"""The task rules' reasons (SPEC §3, §8): every user-visible word a task decision says.

:mod:`bot.tasks.rules` decides; this module words the decision. Each reason is a template
filled with :meth:`str.format`; ``{bot}`` in a template stands for the bot's mention and
is left in place (see :func:`say`) until an adapter renders the reason for GitHub
(:func:`bot.tasks.transitions.render_reason`). The helpers at the end only build text.

Imports only :mod:`bot.tasks.model` and the standard library (the rules import this module,
so it may not import them or :mod:`bot.tasks.transitions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from bot.tasks.model import Status, Task

MENTION_PLACEHOLDER = "{bot}"
"""The text :data:`bot.tasks.transitions.MENTION_PLACEHOLDER` is (the same value; a test
keeps them equal): templates keep it when they are filled in."""

# -- states and what to do next ---------------------------------------------------------------

STATE_WORDS: Mapping[Status, str] = MappingProxyType(
    {
        Status.PENDING: "waiting for a worker",
        Status.RUNNING: "running",
        Status.REVIEW: "in review",
        Status.WAITING: "waiting for answers to its questions",
        Status.PAUSED: "paused",
        Status.MERGED: "merged",
        Status.CLOSED: "closed",
        Status.FAILED: "failed",
    }
)

NEXT_STEP: Mapping[Status, str] = MappingProxyType(
    {
        Status.PENDING: "It starts when a worker is free; use `{bot} stop` to pause it.",
        Status.RUNNING: "Use `{bot} stop` first.",
        Status.REVIEW: "Comment on the pull request to ask for changes, or use `{bot} cancel`.",
        Status.WAITING: "Answer the questions in a comment on the issue, or use `{bot} stop`.",
        Status.PAUSED: "Use `{bot} resume`, or `{bot} retry [instructions]`.",
        Status.MERGED: "Use `{bot} start over` to begin again.",
        Status.CLOSED: "Use `{bot} start over` to begin again.",
        Status.FAILED: "Use `{bot} retry [instructions]` or `{bot} start over`.",
    }
)

# -- the reasons, rule by rule -----------------------------------------------------------------

CANNOT = "Cannot {action}: this task is {state}. {hint}"
FAILED_HINT = "Use `{bot} retry [instructions]` to try again, or `{bot} start over`."

COST_CAP_REACHED = "Cost cap reached: spent ${cost:.2f} of ${cap:.2f}."
COST_CAP_REFUSAL = (
    "Cannot {action}: this task has spent ${cost:.2f} of its ${cap:.2f} cost cap. Raise "
    "`max_cost_usd` in .github/patchwright.yml and use `{bot} retry`, or use `{bot} start over`."
)
NO_COST = "No cost to add."
COST_ADDED = "Cost +${usd:.2f} (total ${cost:.2f} of ${cap:.2f})."
COST_ADDED_OVER_CAP = "Cost +${usd:.2f} (total ${cost:.2f}): the ${cap:.2f} cap is reached; stopping the agent."

CLAIMED = "Attempt {attempt} started on worker {worker}."
CLAIM_TOO_EARLY = "Not claimable before {not_before:%Y-%m-%d %H:%M} UTC (backing off)."
CLAIM_NOT_PENDING = "Not claimable: this task is {state}."

STARTED_OVER = "Started over: attempt 1 of {max}."
STARTED_OVER_BY_LABEL = "Label added again: started over, attempt 1 of {max}."
ALREADY_HAS_TASK = "Issue #{issue} already has a task; it is {state}."
RELABEL_MERGED = "This issue's task is merged. Open a new issue, or use `{bot} start over` to begin again."

CI_NOT_IN_REVIEW = "Ignored CI failure: this task is {state}, not in review."
CI_STALE = "Ignored CI result for {sha}: the task's current head is {head}."
CI_FAILED_WHAT = "CI failed ({checks})"
CI_RETRY_REASON = "CI failed: {checks}"

RETRYING = "{what}; retrying: attempt {attempt} of {max}."
BREAKER_TRIPPED = "{what}: the same failure {count} times in a row, so no more automatic retries."
BUDGET_EXHAUSTED = "{what}: no retries left ({attempt} of {max} attempts used)."
GIVING_UP_COST = "{what}. {gate}"

FEEDBACK_EMPTY = "Ignored empty feedback."
FEEDBACK_LIMIT = (
    "Cannot retry with this feedback: this task already had {limit} feedback retries, the "
    "limit. Use `{bot} start over`, or raise the limit in .github/patchwright.yml."
)
FEEDBACK_NO_PR = "Cannot use this feedback: this task has no pull request yet. {hint}"
FEEDBACK_RETRY = "Feedback from {author}: retrying as attempt {attempt} (not counted against the budget)."
FEEDBACK_QUEUED = "Feedback from {author} queued: it becomes the next attempt once attempt {attempt} ends."
FEEDBACK_MERGED = "Feedback from {author} added to the queued attempt {attempt}."
FEEDBACK_RETRY_REASON = "Feedback from {author}"
QUEUED_FEEDBACK_RETRY = "{count} queued feedback comment(s): retrying as attempt {attempt}."
QUEUED_FEEDBACK_DROPPED = " {count} queued feedback comment(s) not used: {gate}"
SOMEONE = "a reviewer"

CONFLICT_IGNORED = "Ignored merge conflict: this task is {state}; it is checked again after the next push."
CONFLICT_WHAT = "Merge conflict with {base}"
CONFLICT_RETRY = "Merge conflict with {base}: resolving it as attempt {attempt} (not counted against the budget)."
CONFLICT_LIMIT = "Merge conflict with {base}: {limit} conflict retries in a row without a successful push."

NOT_RUNNING = "Ignored the worker's report ({what}): this task is {state}, not running."
STALE_REPORT = "Ignored the worker's report ({what}) from attempt {attempt}: this task is on attempt {current}."
TRANSIENT_RETRY = "{what}; retrying after {at:%H:%M} UTC as attempt {attempt} (not counted against the budget)."
TRANSIENT_LIMIT = "{what}: {limit} times in a row."
WORKER_LOST = "The worker running this task stopped sending heartbeats"
# No decision may depend on these words: a pool tells that a task was taken back from it by
# the task's worker_id (see bot.tasks.rules.worker_lost).

ATTEMPT_FAILED = "Attempt {attempt} failed: {error}"
NO_CHANGES = "The agent made no changes"
NO_CHANGES_FIRST = "The agent made no changes."

PUSHED = "Attempt {attempt} pushed {sha} to #{pr}{summary}"
PUSH_RECORDED = "Recorded a push of {sha} to #{pr} that landed after the task became {state}."

QUESTIONS = "The agent asked {count} question(s); answer them in a comment on the issue."
ANSWERED = "Answers from {author}: continuing as attempt {attempt}."
ANSWERS_RETRY_REASON = "Answers from {author}"
ANSWER_EMPTY = "Ignored an empty answer."
NOT_WAITING = "Not taken as answers: this task is {state}, not waiting for answers."

STOPPED = "Paused by {who}."
STOPPED_LABEL = "Paused: the trigger label was removed."
UNLABEL_IGNORED = "Label removed; nothing to pause: this task is {state}."
RESUMED = "Resumed: attempt {attempt} of {max} is waiting for a worker."

MANUAL_RETRY = "Retry requested{by}: attempt {attempt} of {max}."
MANUAL_RETRY_REASON = "Retry requested{by}"
MANUAL_RETRY_DEFAULT_TEXT = "A maintainer asked for another attempt."

CANCELLED = "Cancelled{by}."
ISSUE_CLOSED = "The issue was closed; the task is closed (the pull request is left as it is)."
ALREADY_FINAL = "Ignored: this task is already {state}."
PR_MERGED = "Pull request #{pr} was merged."
PR_CLOSED = "Pull request #{pr} was closed without merging."
PR_NOT_THE_TASKS = "Ignored: pull request #{pr} is not this task's current pull request."

SPEC_REFRESHED = "The issue was edited: the task now works from the new text."
SPEC_UNCHANGED = "Ignored issue edit: the title and text are unchanged."
SPEC_NOT_USED = "Issue edit not used: this task is {state}. Use `{bot} start over` to work from the new text."

CANNOT_EDIT = "Cannot edit the task's input: this task is {state}, and only a paused task's input can be edited. {hint}"
EDIT_HINT: Mapping[Status, str] = MappingProxyType(
    {
        Status.PENDING: "Use `{bot} stop` to pause it, edit it, then `{bot} resume`.",
        Status.RUNNING: "Use `{bot} stop` first (its attempt ends), edit it, then `{bot} resume`.",
        Status.WAITING: "Answer the questions, or use `{bot} stop` to pause it, edit it, then `{bot} resume`.",
        Status.REVIEW: "Its pull request is in review: comment on it to ask for changes, or use `{bot} retry [instructions]`.",
        Status.PAUSED: "",
        Status.MERGED: "It is finished: use `{bot} start over` to begin again.",
        Status.CLOSED: "It is finished: use `{bot} start over` to begin again.",
        Status.FAILED: "Use `{bot} retry [instructions]` to try again with new instructions, or `{bot} start over`.",
    }
)
EDITED = "Input edited by {who} while paused: {what}. `{bot} resume` starts attempt {attempt} from it."
EDITED_SPEC = "the issue text ({before} → {after} characters)"
EDITED_INSTRUCTIONS = "the instructions ({before} → {after} characters)"
EDITED_AND = " and "
EDIT_UNCHANGED = "Nothing edited: the issue text and the instructions are already as given."


# -- words the rules fill into the templates ----------------------------------------------

A_MAINTAINER = "a maintainer"  # who stopped the task or answered, when unnamed
QUEUED_COMMENTS = "queued comments"  # the author of a retry made of queued feedback
BY = " by {author}"  # who asked for a retry or a cancel, when named
THE_BASE_BRANCH = "the base branch"  # when the task names none
NO_SHA = "(none)"
TRANSIENT_ERROR = "Transient error"  # a transient failure reported without words
UNKNOWN_ERROR = "unknown error"  # a failure reported without words
FAILED_THEN = "{what}. {then}"  # a failed attempt, then what happens next

# What a refusal says the human asked for (CANNOT, COST_CAP_REFUSAL).
ACTION_RETRY = "retry"
ACTION_STOP = "stop"
ACTION_RESUME = "resume"
ACTION_CANCEL = "cancel"
ACTION_USE_FEEDBACK = "use this feedback"
ACTION_RETRY_WITH_FEEDBACK = "retry with this feedback"
ACTION_CONTINUE_WITH_ANSWERS = "continue with these answers"

# Which worker report is ignored (NOT_RUNNING, STALE_REPORT).
REPORT_FAILURE = "attempt failure"
REPORT_NO_CHANGES = "no changes"
REPORT_QUESTIONS = "questions"
REPORT_PUSH = "push of {sha}"


# -- helpers that only build text -----------------------------------------------------------


def say(template: str, **fields: object) -> str:
    """``template`` filled in; ``{bot}`` stays a placeholder for the mention."""
    return template.format(bot=MENTION_PLACEHOLDER, **fields)


def cannot(action: str, task: Task) -> str:
    """Refusing ``action`` for ``task``'s status, with what can be done instead."""
    hint = say(NEXT_STEP[task.status])
    return say(CANNOT, action=action, state=STATE_WORDS[task.status], hint=hint)


def cost_refusal(action: str, task: Task) -> str:
    """Refusing a human-requested ``action`` because ``task`` reached its cost cap."""
    return say(COST_CAP_REFUSAL, action=action, cost=task.cost_usd, cap=task.max_cost_usd)


def brief(text: str, limit: int = 300) -> str:
    """The first non-empty line of ``text``, at most ``limit`` characters."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def clause(text: str) -> str:
    """``text`` without a closing full stop (an ellipsis stays), to be quoted inside a longer
    reason ("Tests failed." → "Attempt 2 failed: Tests failed; retrying…")."""
    text = text.rstrip()
    return text[:-1].rstrip() if text.endswith(".") and not text.endswith("..") else text


def sentence(text: str) -> str:
    """``text`` ending with a full stop (unless it already ends a sentence)."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def failed_reason(cause: str) -> str:
    """The reason of a decision that fails the task because of ``cause``."""
    return f"{sentence(cause)} {say(FAILED_HINT)}"


def pushed_reason(*, attempt: int, sha: str, pr: int, summary: str) -> str:
    """Attempt ``attempt`` pushed ``sha`` to PR ``pr``; the summary's first line follows."""
    line = brief(summary, 200)
    return PUSHED.format(attempt=attempt, sha=sha, pr=pr, summary=f": {line}" if line else ".")
