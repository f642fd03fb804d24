"""The task page (``/tasks/{id}``): facts, attempt timeline, logs, audit events (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.messages import COST_UNKNOWN_NOTE, STATUS_MEANINGS
from bot.store.base import Attempt, LogBatch, TaskEvent
from bot.tasks.model import Status, Task
from bot.web import views
from bot.web.pages.html import (
    badge,
    duration,
    e,
    exact_time,
    kind_words,
    link,
    money,
    outcome_words,
    pr_link,
    repo_url,
    sha_link,
    span,
    tidy,
    when,
)
from bot.web.pages.logs import render_logs

CHECKS_LINK = "checks"


def _facts(rows: Sequence[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _attempts_table(attempts: Sequence[Attempt], now: datetime, *, html_base: str = "", repo: str = "") -> str:
    if not attempts:
        return '<p class="empty">No attempt has started yet.</p>'
    rows = []
    for a in attempts:
        outcome = a.outcome or ""
        notes = ""
        if a.summary:
            notes += f'<div class="summary">{e(a.summary)}</div>'
        if a.error:
            notes += f'<div class="error">{e(tidy(a.error))}</div>'
        if a.refused:
            refused = ", ".join(line.split(": ", 1)[0] for line in a.refused.splitlines())
            notes += f'<div class="error">The sandbox refused connections to {e(refused)}</div>'
        cost = money(a.cost_usd) if a.cost_known else '<span title="the agent reported no cost">unknown</span>'
        rows.append(
            f'<tr id="attempt-{a.number}">'
            f'<td class="num">{a.number}</td>'
            f"<td>{e(kind_words(a.kind))}</td>"
            f'<td><span class="outcome o-{e(outcome or "running")}">{e(outcome_words(outcome))}</span></td>'
            f'<td class="num">{cost}</td>'
            f"<td>{exact_time(a.started_at, now)}</td>"
            f'<td class="num">{e(span(a.started_at, a.finished_at or now))}'
            f'{"" if a.finished_at else " <span class=muted>so far</span>"}</td>'
            f"<td>{sha_link(html_base, repo, a.head_before)} → {sha_link(html_base, repo, a.head_after)}</td>"
            f"<td>{notes or '<span class=muted>-</span>'}</td>"
            "</tr>"
        )
    return (
        '<table class="attempts"><thead><tr><th class="num">#</th><th>Kind</th><th>Outcome</th>'
        '<th class="num">Cost</th><th>Started (UTC)</th><th class="num">Duration</th><th>Head before → after</th>'
        f"<th>Summary</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _events_table(events: Sequence[TaskEvent], now: datetime) -> str:
    if not events:
        return '<p class="empty">No events.</p>'
    rows = []
    for ev in events:
        move = ""
        if ev.from_status or ev.to_status:
            move = (
                f'{badge(ev.from_status.value) if ev.from_status else "-"} → '
                f'{badge(ev.to_status.value) if ev.to_status else "-"}'
            )
        delivery = (
            f'<a class="mono" href="{e(views.delivery_path(ev.delivery_id))}">{e(ev.delivery_id[:18])}</a>'
            if ev.delivery_id else '<span class="muted">-</span>'
        )
        rows.append(
            f'<tr><td class="when">{exact_time(ev.at, now)}</td><td>{e(ev.kind)}</td><td>{move}</td>'
            f"<td>{e(ev.actor or '-')}</td><td>{delivery}</td><td>{e(tidy(ev.reason))}</td></tr>"
        )
    return (
        '<table class="events"><thead><tr><th>When (UTC)</th><th>Event</th><th>Status</th><th>By</th>'
        f"<th>Delivery</th><th>Reason</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def render_task(
    task: Task,
    attempts: Sequence[Attempt],
    events: Sequence[TaskEvent],
    logs: Sequence[LogBatch],
    *,
    now: datetime,
    html_base: str,
    actions: str = "",
) -> str:
    """The task page content: facts, the ``actions`` section (bot.web.pages.actions),
    attempt timeline, logs per attempt, audit events."""
    issue_url = views.issue_url(task, html_base)
    pr = pr_link(task.pr_url, task.pr_number)
    if task.head_sha and task.pr_url:
        pr += " · " + link(repo_url(html_base, task.repo, "commit", task.head_sha, "checks"), CHECKS_LINK)
    retry = [] if task.is_terminal else [
        ("Retry", e(kind_words(task.retry_kind)) + (f" — {e(tidy(task.retry_reason))}" if task.retry_reason else ""))
    ]
    running = ([("Running for", e(span(task.started_at, now)))]
               if task.status is Status.RUNNING and task.started_at else [])
    elapsed_end = task.updated_at if task.is_terminal else now
    facts = _facts(
        [
            ("Status", f"{badge(task.status.value)} {e(STATUS_MEANINGS.get(task.status.value, ''))}"
             + (f' <span class="muted">({e(tidy(task.close_reason))})</span>' if task.close_reason else "")),
            ("Issue", link(issue_url, f"{task.repo}#{task.issue_number}")),
            ("Pull request", pr),
            ("Attempt", (f"{task.attempt} of {task.max_attempts} "
                         f'<span class="muted">({task.budget_left} automatic retries left)</span>')),
            *retry,
            ("Cost", f"{money(task.cost_usd)} of {money(task.max_cost_usd)}"
             + ("" if all(a.cost_known for a in attempts) else f' <span class="error">{e(COST_UNKNOWN_NOTE.replace("**", ""))}</span>')),
            ("Branch", (f'<span class="mono">{e(task.branch or "-")}</span> '
                        f'<span class="muted">on {e(task.base_branch or "-")}, head</span> '
                        f"{sha_link(html_base, task.repo, task.head_sha)}")),
            ("Agent", e(f"{task.agent or '-'} {task.model}".strip())),
            ("Worker", e(task.worker_id or "-") + (f" · heartbeat {when(task.heartbeat_at, now)}"
                                                   if task.heartbeat_at else "")),
            ("Created", exact_time(task.created_at, now)),
            ("Updated", exact_time(task.updated_at, now)),
            ("Elapsed", e(duration((elapsed_end - task.created_at).total_seconds()))),
            *running,
        ]
    )
    extra = ""
    if task.retry_context.strip():
        extra += f'<details class="text"><summary>Retry context</summary><pre>{e(task.retry_context)}</pre></details>'
    if task.queued_feedback:
        queued = "\n\n---\n\n".join(task.queued_feedback)
        extra += f'<details class="text"><summary>Queued feedback</summary><pre>{e(queued)}</pre></details>'
    if task.spec.strip():
        extra += f'<details class="text"><summary>Issue text (spec)</summary><pre>{e(task.spec)}</pre></details>'
    return (
        f'<h1><span class="muted">{e(task.repo)}#{task.issue_number}</span> {e(task.title)}</h1>'
        f'<p class="muted mono">{e(task.id)}</p>'
        f"{facts}{actions}{extra}"
        f"<h2>Attempts</h2>{_attempts_table(attempts, now, html_base=html_base, repo=task.repo)}"
        f"<h2>Logs</h2>{render_logs(task, logs)}"
        f"<h2>Events</h2>{_events_table(events, now)}"
    )
