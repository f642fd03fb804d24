"""The task board (``/``): tasks grouped by status, with search and cursor paging (pure rendering).

A page holds at most :data:`BOARD_LIMIT` tasks, newest first; "Older tasks" links to the next
page (``?before=<cursor>``, :mod:`bot.web.paging`), keeping the filters and the search. Per
task: title and the reason it is where it is, repository, issue, agent and model, attempt,
cost, pull request (``#n``) with the CI state of its head while in review, and times (elapsed
since created, running for).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from bot.ci import HeadState
from bot.messages import STATUS_MEANINGS
from bot.tasks.model import Status, Task
from bot.web import views
from bot.web.pages.html import (
    badge,
    duration,
    e,
    link,
    money,
    pr_link,
    render_filters,
    span,
    tidy,
    when,
)

BOARD_ORDER: tuple[Status, ...] = (
    Status.RUNNING,
    Status.PENDING,
    Status.WAITING,
    Status.REVIEW,
    Status.PAUSED,
    Status.FAILED,
    Status.MERGED,
    Status.CLOSED,
)
BOARD_LIMIT = 200

NO_TASKS = "No tasks yet. Label an issue to create one."
NO_MATCH = "No task matches."
OLDER_TASKS = "Older tasks"
NEWEST_TASKS = "Newest tasks"
SEARCH_LABEL = "Search tasks"
SEARCH_PLACEHOLDER = "title, owner/name, #12 or id"
CI_WORDS: Mapping[HeadState, str] = {
    HeadState.PASSING: "CI passing",
    HeadState.FAILING: "CI failing",
    HeadState.PENDING: "CI pending",
}
CI_TITLES: Mapping[HeadState, str] = {
    HeadState.PASSING: "Every counted check of the head passed.",
    HeadState.FAILING: "Checks failed, but not because of the code (cancelled, stale, or failing on the base too).",
    HeadState.PENDING: "Checks of the head are still running or have not been evaluated yet.",
}


def render_board_filters(status: Status | None, repo: str | None, search: str | None = None) -> str:
    """The status and repository filter, then the labelled search field."""
    filters = render_filters("/", "status", [s.value for s in BOARD_ORDER], status.value if status else None, repo)
    field = (
        f'<label class="search">{e(SEARCH_LABEL)} <input type="search" name="q" value="{e(search or "")}" '
        f'placeholder="{e(SEARCH_PLACEHOLDER)}"></label>'
    )
    return filters.replace('<button type="submit">', field + '<button type="submit">', 1)


def visible_reason(task: Task) -> str:
    """Why the task is where it is: the close reason of a finished task (never a stale retry
    reason), the retry reason of an active one; doubled punctuation removed."""
    return tidy(task.close_reason if task.is_terminal else task.retry_reason)


def elapsed_seconds(task: Task, now: datetime) -> float:
    """Created → now, or → its last change once finished."""
    end = task.updated_at if task.is_terminal else now
    return max(0.0, (end - task.created_at).total_seconds())


def ci_chip(state: HeadState | None) -> str:
    """The CI state of a head in review as text in a chip ("" when unknown)."""
    if state is None:
        return ""
    return f'<span class="ci ci-{e(state.value)}" title="{e(CI_TITLES[state])}">{e(CI_WORDS[state])}</span>'


def _times(task: Task, now: datetime) -> str:
    out = f'<span title="since created">{e(duration(elapsed_seconds(task, now)))}</span>'
    if task.status is Status.RUNNING and task.started_at is not None:
        out += f'<div class="running">running {e(span(task.started_at, now))}</div>'
    return out


def _task_row(task: Task, *, now: datetime, html_base: str, ci: HeadState | None) -> str:
    reason = visible_reason(task)
    issue = link(views.issue_url(task, html_base), f"#{task.issue_number}")
    agent = e(task.agent or "-") + (f'<div class="muted model">{e(task.model)}</div>' if task.model else "")
    pr = pr_link(task.pr_url, task.pr_number) + (f"<div>{ci_chip(ci)}</div>" if ci else "")
    return (
        f'<tr data-task-id="{e(task.id)}">'
        f'<td class="title"><a href="{e(views.task_path(task.id))}">{e(task.title) or "(no title)"}</a>'
        f'{f"<div class=reason>{e(reason)}</div>" if reason else ""}</td>'
        f"<td>{e(task.repo)}</td>"
        f"<td>{issue}</td>"
        f"<td>{agent}</td>"
        f'<td class="num">{task.attempt}/{task.max_attempts}</td>'
        f'<td class="num">{money(task.cost_usd)}</td>'
        f"<td>{pr}</td>"
        f"<td>{_times(task, now)}</td>"
        f"<td>{when(task.updated_at, now)}</td>"
        "</tr>"
    )


def render_board(
    tasks: Sequence[Task],
    *,
    now: datetime,
    html_base: str,
    ci: Mapping[str, HeadState] | None = None,
    older_href: str | None = None,
    newest_href: str | None = None,
    filtered: bool = False,
) -> str:
    """The task list grouped by status (the live part of ``/``).

    ``ci``: the CI state per task id of heads in review; ``older_href``: the next page's
    address when more tasks follow; ``newest_href``: the first page's when this is not it;
    ``filtered``: a search or filter is applied (changes the empty text)."""
    ci = ci or {}
    nav = ""
    if older_href or newest_href:
        links = []
        if newest_href:
            links.append(f'<a href="{e(newest_href)}">{e(NEWEST_TASKS)}</a>')
        if older_href:
            links.append(f'<a rel="next" href="{e(older_href)}">{e(OLDER_TASKS)} →</a>')
        nav = f'<nav class="pager" aria-label="pages">{" ".join(links)}</nav>'
    if not tasks:
        return f'<p class="empty">{e(NO_MATCH if filtered or newest_href else NO_TASKS)}</p>{nav}'
    groups: dict[Status, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.status, []).append(task)
    counts = "".join(
        f'<a class="count" href="#status-{s.value}">{badge(s.value)} {len(groups[s])}</a>'
        for s in BOARD_ORDER if s in groups
    )
    parts = [f'<nav class="counts" aria-label="statuses">{counts}</nav>']
    for status in BOARD_ORDER:
        group = groups.get(status)
        if not group:
            continue
        rows = "".join(_task_row(t, now=now, html_base=html_base, ci=ci.get(t.id)) for t in group)
        parts.append(
            f'<section class="group" id="status-{status.value}" data-status="{status.value}">'
            f"<h2>{badge(status.value)} <span class=n>{len(group)}</span> "
            f'<span class="meaning">{e(STATUS_MEANINGS.get(status.value, ""))}</span></h2>'
            '<table class="tasks"><thead><tr><th>Task</th><th class="w-repo">Repository</th>'
            '<th class="w-s">Issue</th><th class="w-m">Agent</th><th class="num w-s">Attempt</th>'
            '<th class="num w-s">Cost</th><th class="w-m">PR</th><th class="w-m">Time</th>'
            '<th class="w-m">Updated</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></section>"
        )
    parts.append(nav)
    return "".join(parts)
