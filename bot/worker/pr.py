"""What the worker does on the pull request (SPEC §6.8, §8, §4.4): open it on the first push,
keep the bot-owned body section current, the ``patchwright`` check run, and the
"Addressed in <sha>." replies in review threads.

Thin adapters over :mod:`bot.github.api` and the renderers of :mod:`bot.messages`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import gidgethub

from bot import messages
from bot.github import api
from bot.github.client import is_refusal
from bot.store.base import Attempt

log = logging.getLogger(__name__)

MAX_TITLE_CHARS = 250


@dataclass(frozen=True, slots=True)
class PullRef:
    number: int
    url: str


def attempt_lines(
    attempts: Iterable[Attempt], *, current: messages.AttemptLine | None = None
) -> list[messages.AttemptLine]:
    """The attempts as users see them; ``current`` (the attempt being concluded, not yet
    finished in the store) replaces the stored row of the same number."""
    lines = [
        messages.AttemptLine(a.number, a.kind.value, a.outcome or "running", a.cost_usd, one_line(a.summary))
        for a in attempts
        if current is None or a.number != current.number
    ]
    if current is not None:
        lines.append(current)
    return sorted(lines, key=lambda line: line.number)


def pull_title(title: str) -> str:
    """The issue title as a PR title: one line, clipped."""
    line = " ".join(title.split()) or "patchwright"
    return line if len(line) <= MAX_TITLE_CHARS else line[: MAX_TITLE_CHARS - 1] + "…"


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line (whitespace collapsed), at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


async def open_or_update_pull(
    gh: Any,
    *,
    repo: str,
    issue_number: int,
    title: str,
    branch: str,
    base: str,
    draft: bool,
    pr_number: int | None,
    lines: Sequence[messages.AttemptLine],
    cost_usd: float,
) -> PullRef:
    """Open the task's PR (``Closes #n`` + the summary section), or update only the summary
    section of the existing one. An open PR for the branch that the task did not know about
    (a crash between push and record) is adopted."""
    summary = messages.attempt_summary_lines(lines, cost_usd)
    if pr_number is None:
        try:
            created = await api.create_pull(
                gh,
                repo,
                title=pull_title(title),
                head=branch,
                base=base,
                body=messages.render_pr_body(issue_number, summary),
                draft=draft,
            )
            return PullRef(int(created["number"]), str(created.get("html_url") or ""))
        except gidgethub.BadRequest as exc:
            if getattr(exc, "status_code", None) != 422:
                raise
            existing = await api.list_pulls(gh, repo, head=branch, state="open")
            if not existing:
                raise
            pr_number = int(existing[0]["number"])
    pull = await api.get_pull(gh, repo, pr_number)
    body = messages.render_pr_body(issue_number, summary, pull.get("body") or "")
    if body != (pull.get("body") or ""):
        await api.update_pull(gh, repo, pr_number, body=body)
    return PullRef(pr_number, str(pull.get("html_url") or ""))


async def refresh_summary(
    gh: Any,
    *,
    repo: str,
    issue_number: int,
    pr_number: int,
    lines: Sequence[messages.AttemptLine],
    cost_usd: float,
) -> None:
    """Rewrite only the bot-owned section of the PR body (after an attempt that did not push)."""
    try:
        await open_or_update_pull(
            gh,
            repo=repo,
            issue_number=issue_number,
            title="",
            branch="",
            base="",
            draft=False,
            pr_number=pr_number,
            lines=lines,
            cost_usd=cost_usd,
        )
    except gidgethub.GitHubException as exc:
        log.warning("PR #%s summary not updated: %s", pr_number, exc)


@dataclass(frozen=True, slots=True)
class RunningChecks:
    """The check runs of an attempt at work on a PR head: ``progress``, the in-progress
    ``patchwright`` run, and ``control``, a completed run carrying the Stop button (GitHub
    displays a run's buttons only once it is completed). Either is None when GitHub refused
    it. Both name the task in ``external_id``, which is how a button click finds it."""

    task_id: str
    attempt: int
    max_attempts: int
    progress: int | None = None
    control: int | None = None


async def start_check_run(
    gh: Any, *, repo: str, head_sha: str, task_id: str, attempt: int, max_attempts: int, kind: str
) -> RunningChecks:
    """While the agent works on the PR's head: the in-progress ``patchwright`` run and the
    completed ``patchwright controls`` run with the Stop button."""
    running = RunningChecks(task_id, attempt, max_attempts)
    try:
        progress = await api.create_check_run(
            gh,
            repo,
            name=messages.CHECK_RUN_NAME,
            head_sha=head_sha,
            status="in_progress",
            external_id=task_id,
            output=messages.check_run_in_progress(attempt, max_attempts, kind),
        )
        running = RunningChecks(task_id, attempt, max_attempts, progress=int(progress["id"]))
        control = await api.create_check_run(
            gh,
            repo,
            name=messages.CONTROL_CHECK_RUN_NAME,
            head_sha=head_sha,
            status="completed",
            conclusion="neutral",
            external_id=task_id,
            output=messages.check_run_control_running(attempt, max_attempts),
            actions=messages.check_run_actions(retry=False, stop=True),
        )
        return RunningChecks(task_id, attempt, max_attempts, progress=running.progress, control=int(control["id"]))
    except gidgethub.GitHubException as exc:
        log.warning("check runs on %s not created: %s", head_sha[:7], exc)
        return running


async def _end_control(gh: Any, repo: str, running: RunningChecks) -> None:
    """Take the Stop button away: the attempt is over."""
    if running.control is None:
        return
    await api.update_check_run(
        gh,
        repo,
        running.control,
        output=messages.check_run_control_ended(running.attempt, running.max_attempts),
        actions=[],
    )


async def report_pushed(
    gh: Any,
    *,
    repo: str,
    head_sha: str,
    task_id: str,
    attempt: int,
    max_attempts: int,
    summary: str,
    cost_usd: float,
    running: RunningChecks | None,
) -> None:
    """The attempt pushed ``head_sha``: complete the in-progress run (it belonged to the old
    head), take the Stop button away and put a completed run with the attempt's summary and
    a Retry button on the new head."""
    output = messages.check_run_success(attempt, max_attempts, summary, cost_usd)
    try:
        if running is not None:
            await _end_control(gh, repo, running)
            if running.progress is not None:
                await api.update_check_run(
                    gh, repo, running.progress, status="completed", conclusion="success", output=output, actions=[]
                )
        await api.create_check_run(
            gh,
            repo,
            name=messages.CHECK_RUN_NAME,
            head_sha=head_sha,
            status="completed",
            conclusion="success",
            external_id=task_id,
            output=output,
            actions=messages.check_run_actions(retry=True, stop=False),
        )
    except gidgethub.GitHubException as exc:
        log.warning("check run on %s not reported: %s", head_sha[:7], exc)


async def report_not_pushed(
    gh: Any,
    *,
    repo: str,
    running: RunningChecks | None,
    error: str,
    failed: bool,
) -> None:
    """Complete the in-progress run of an attempt that pushed nothing: ``failure`` with the
    error and a Retry button, or ``neutral`` (stopped, questions); take the Stop button away."""
    if running is None:
        return
    if failed:
        output = messages.check_run_failure(running.attempt, running.max_attempts, error)
        conclusion = "failure"
        actions = messages.check_run_actions(retry=True, stop=False)
    else:
        output = {
            "title": f"Attempt {running.attempt} of {running.max_attempts}: ended",
            "summary": messages.escape_markdown(error or "The attempt ended without a push."),
        }
        conclusion = "neutral"
        actions = []
    try:
        await _end_control(gh, repo, running)
        if running.progress is not None:
            await api.update_check_run(
                gh, repo, running.progress, status="completed", conclusion=conclusion, output=output, actions=actions
            )
    except gidgethub.GitHubException as exc:
        log.warning("check runs of attempt %s not completed: %s", running.attempt, exc)


async def reply_addressed(
    gh: Any, *, repo: str, pr_number: int, thread_ids: Sequence[str], head_sha: str
) -> list[str]:
    """Reply "Addressed in <sha>." in each review thread; the ids answered (a thread that is
    gone or refuses the reply is skipped, and left for no one to answer again)."""
    answered: list[str] = []
    body = messages.render_addressed_in(head_sha)
    for thread in thread_ids:
        try:
            await api.reply_to_review_comment(gh, repo, pr_number, int(thread), body)
        except (gidgethub.GitHubException, ValueError) as exc:
            log.warning("no reply in review thread %s: %s", thread, exc)
            if isinstance(exc, ValueError) or is_refusal(exc):
                answered.append(thread)  # a 4xx will not get better: do not try again
            continue
        answered.append(thread)
    return answered
