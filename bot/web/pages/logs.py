"""The attempt logs on a task page (pure rendering)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.tasks.model import Task
from bot.web import views
from bot.web.pages.html import e

LOG_LINES_SHOWN = 2000  # per attempt; the API has them all


def render_logs(task: Task, logs: Mapping[int, Sequence[str]]) -> str:
    if not logs:
        return '<p class="empty">No log lines yet.</p>'
    parts = []
    last = max(logs)
    for number in sorted(logs):
        lines = logs[number]
        shown = lines[-LOG_LINES_SHOWN:]
        api = f"/api{views.task_path(task.id)}/logs?attempt={number}"
        cut = (
            f'<p class="muted">Last {len(shown)} of {len(lines)} lines; <a href="{e(api)}">all lines</a>.</p>'
            if len(shown) < len(lines) else ""
        )
        parts.append(
            f'<details class="log"{" open" if number == last else ""}>'
            f"<summary>Attempt {number} <span class=muted>({len(lines)} lines)</span></summary>"
            f'{cut}<pre>{e(chr(10).join(shown))}</pre></details>'
        )
    return "".join(parts)
