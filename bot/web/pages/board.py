"""The task board (``/``): tasks grouped by status (pure rendering)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.messages import STATUS_MEANINGS
from bot.tasks.model import Status, Task
from bot.web import views
from bot.web.pages.html import badge, e, link, money, render_filters, when

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
BOARD_LIMIT = 500


def render_board_filters(status: Status | None, repo: str | None) -> str:
    return render_filters("/", "status", [s.value for s in BOARD_ORDER], status.value if status else None, repo)


def _task_row(task: Task, *, now: datetime, html_base: str) -> str:
    reason = task.close_reason or task.retry_reason
    pr = link(task.pr_url, f"#{task.pr_number}" if task.pr_number else "PR") if task.pr_url else "-"
    issue = link(views.issue_url(task, html_base), f"#{task.issue_number}")
    return (
        f'<tr data-task-id="{e(task.id)}">'
        f'<td class="title"><a href="{e(views.task_path(task.id))}">{e(task.title) or "(no title)"}</a>'
        f'{f"<div class=reason>{e(reason)}</div>" if reason else ""}</td>'
        f"<td>{e(task.repo)}</td>"
        f"<td>{issue}</td>"
        f'<td class="num">{task.attempt}/{task.max_attempts}</td>'
        f'<td class="num">{money(task.cost_usd)}</td>'
        f"<td>{pr}</td>"
        f"<td>{when(task.updated_at, now)}</td>"
        "</tr>"
    )


def render_board(tasks: Sequence[Task], *, now: datetime, html_base: str, limit: int = BOARD_LIMIT) -> str:
    """The task list grouped by status (the live part of ``/``)."""
    if not tasks:
        return '<p class="empty">No tasks yet. Label an issue to create one.</p>'
    groups: dict[Status, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.status, []).append(task)
    counts = "".join(
        f'<a class="count" href="#status-{s.value}">{badge(s.value)} {len(groups[s])}</a>'
        for s in BOARD_ORDER if s in groups
    )
    parts = [f'<nav class="counts">{counts}</nav>']
    for status in BOARD_ORDER:
        group = groups.get(status)
        if not group:
            continue
        rows = "".join(_task_row(t, now=now, html_base=html_base) for t in group)
        parts.append(
            f'<section class="group" id="status-{status.value}" data-status="{status.value}">'
            f"<h2>{badge(status.value)} <span class=n>{len(group)}</span> "
            f'<span class="meaning">{e(STATUS_MEANINGS.get(status.value, ""))}</span></h2>'
            '<table class="tasks"><thead><tr><th>Task</th><th class="w-repo">Repository</th>'
            '<th class="w-s">Issue</th><th class="num w-s">Attempt</th><th class="num w-s">Cost</th>'
            '<th class="w-s">PR</th><th class="w-m">Updated</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></section>"
        )
    if len(tasks) >= limit:
        parts.append(f'<p class="muted">Showing the newest {limit} tasks; filter by repository to see others.</p>')
    return "".join(parts)
