"""JSON shapes of tasks, attempts, events and deliveries for the web API (pure).

Every shape is an explicit allowlist of fields, so a field added to a record later is not
published by accident. Nothing here returns a credential: tasks carry no token, the agent's
resumable session handle (``agent_session``) is left out, and deliveries are shown without
their raw payload (``patchwright deliveries show --payload`` prints it on the server).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from bot.store.base import Attempt, Delivery, TaskEvent
from bot.tasks.model import Task

TASK_SUMMARY_FIELDS: tuple[str, ...] = (
    "id",
    "repo",
    "installation_id",
    "issue_number",
    "title",
    "status",
    "attempt",
    "max_attempts",
    "retry_kind",
    "retry_reason",
    "failure_category",
    "consecutive_failures",
    "conflict_retries",
    "transient_retries",
    "feedback_retries",
    "cost_usd",
    "max_cost_usd",
    "branch",
    "base_branch",
    "pr_number",
    "pr_url",
    "head_sha",
    "agent",
    "model",
    "not_before",
    "worker_id",
    "heartbeat_at",
    "started_at",
    "created_at",
    "updated_at",
    "close_reason",
    "version",
)
"""What lists and live events show of a task."""

TASK_DETAIL_FIELDS: tuple[str, ...] = (
    *TASK_SUMMARY_FIELDS,
    "spec",
    "retry_context",
    "queued_feedback",
    "status_comment_id",
)
"""What ``GET /api/tasks/{id}`` shows. Left out on purpose: ``agent_session`` (a handle that
resumes the agent's conversation), ``review_threads`` and ``last_error_signature`` (internal)."""

ATTEMPT_FIELDS: tuple[str, ...] = (
    "number",
    "kind",
    "started_at",
    "finished_at",
    "outcome",
    "cost_usd",
    "summary",
    "head_before",
    "head_after",
    "error",
    "cost_known",
    "refused",
)

EVENT_FIELDS: tuple[str, ...] = (
    "seq",
    "at",
    "kind",
    "reason",
    "actor",
    "delivery_id",
    "from_status",
    "to_status",
)

DELIVERY_FIELDS: tuple[str, ...] = (
    "id",
    "seq",
    "event",
    "action",
    "repo",
    "installation_id",
    "received_at",
    "state",
    "outcome",
    "ignore_reason",
    "claimed_by",
    "claimed_at",
    "processed_at",
    "attempts",
    "payload_pruned",
    "payload_pruned_at",
    "sender",
    "verdict",
    "from_bot",
)


def json_value(value: Any) -> Any:
    """A record value as JSON: enums by value, datetimes in ISO 8601, tuples as lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return [json_value(v) for v in value]
    return value


def _pick(record: Any, fields: Sequence[str]) -> dict[str, Any]:
    return {name: json_value(getattr(record, name)) for name in fields}


def github_html_base(api_url: str) -> str:
    """The web address for an API base: ``https://api.github.com`` → ``https://github.com``,
    GitHub Enterprise ``https://host/api/v3`` → ``https://host``; others as they are."""
    url = api_url.rstrip("/")
    parts = urlsplit(url)
    if parts.hostname == "api.github.com":
        return f"{parts.scheme}://github.com"
    if parts.path.endswith("/api/v3"):
        return url[: -len("/api/v3")]
    return url


def issue_url(task: Task, html_base: str) -> str:
    owner, _, name = task.repo.partition("/")
    return f"{html_base}/{quote(owner, safe='')}/{quote(name, safe='')}/issues/{int(task.issue_number)}"


def safe_http_url(url: str) -> str | None:
    """``url`` when it is a plain http(s) address (safe to link to), else None."""
    url = url.strip()
    if re.fullmatch(r"https?://[^\s\"'<>`\\]+", url, flags=re.IGNORECASE):
        return url
    return None


def task_path(task_id: str) -> str:
    return "/tasks/" + quote(task_id, safe="")


def delivery_path(delivery_id: str) -> str:
    return "/deliveries/" + quote(delivery_id, safe="")


def task_summary_json(task: Task, *, html_base: str) -> dict[str, Any]:
    """A task as lists and live events show it."""
    out = _pick(task, TASK_SUMMARY_FIELDS)
    out["pr_url"] = safe_http_url(task.pr_url) or ""
    out["budget_left"] = task.budget_left
    out["issue_url"] = issue_url(task, html_base)
    out["links"] = {
        "self": "/api" + task_path(task.id),
        "logs": "/api" + task_path(task.id) + "/logs",
        "dashboard": task_path(task.id),
    }
    return out


def task_json(task: Task, *, html_base: str) -> dict[str, Any]:
    """A task with its spec, retry context and queued feedback."""
    out = task_summary_json(task, html_base=html_base)
    out.update(_pick(task, TASK_DETAIL_FIELDS[len(TASK_SUMMARY_FIELDS):]))
    return out


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return _pick(attempt, ATTEMPT_FIELDS)


def event_json(event: TaskEvent) -> dict[str, Any]:
    return _pick(event, EVENT_FIELDS)


#: How the dashboard marks a delivery whose payload the ledger's retention dropped.
PAYLOAD_PRUNED = "payload pruned"
PAYLOAD_PRUNED_TITLE = (
    "The ledger's retention (PATCHWRIGHT_PAYLOAD_RETENTION_DAYS) dropped this delivery's payload; "
    "its outcome stays, and it cannot be replayed."
)


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    """A ledger row without its payload (its size only; ``payload_pruned`` when the ledger's
    retention dropped it, and ``payload_pruned_at`` when)."""
    out = _pick(delivery, DELIVERY_FIELDS)
    out["payload_bytes"] = len(delivery.payload)
    return out


def logs_json(task_id: str, attempt: int | None, lines: Sequence[tuple[int, str]]) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "attempt": attempt,
        "lines": [{"attempt": n, "line": line} for n, line in lines],
    }


def group_logs(lines: Sequence[tuple[int, str]]) -> Mapping[int, list[str]]:
    """Log lines per attempt number, in order."""
    grouped: dict[int, list[str]] = {}
    for number, line in lines:
        grouped.setdefault(number, []).append(line)
    return grouped
