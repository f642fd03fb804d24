"""Operator commands (SPEC §9): `tasks …`, `deliveries …` and `replay FILE`.

Formatting is pure (``format_*``); the ``run_*`` functions do the store or HTTP work.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.operations.commands import run_task_command
from bot.operations.decisions import LostRaces
from bot.operations.services import Services
from bot.store.base import Attempt, Delivery, DeliveryState, Store, TaskEvent
from bot.tasks.model import Status, Task

#: The audit trail's actor (and the reasons' author) for commands given on the command line.
ACTOR = "cli"


class AdminError(Exception):
    """A command could not do what was asked; the message says why and what would work."""


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain text table with columns as wide as their widest cell."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_tasks(tasks: Sequence[Task]) -> str:
    if not tasks:
        return "no tasks"
    rows = [
        (t.id, t.repo, f"#{t.issue_number}", t.status.value, f"{t.attempt}/{t.max_attempts}",
         f"${t.cost_usd:.2f}", f"#{t.pr_number}" if t.pr_number else "-", _when(t.updated_at))
        for t in tasks
    ]
    return table(rows, ("task", "repo", "issue", "status", "attempt", "cost", "pr", "updated"))


def format_task(task: Task, attempts: Sequence[Attempt], events: Sequence[TaskEvent]) -> str:
    lines = [
        f"task        {task.id}",
        f"issue       {task.repo}#{task.issue_number}  {task.title}",
        f"status      {task.status.value}" + (f" ({task.close_reason})" if task.close_reason else ""),
        f"attempt     {task.attempt} of {task.max_attempts} (budget left {task.budget_left})",
        f"retry       {task.retry_kind.value}: {task.retry_reason or '-'}",
        f"cost        ${task.cost_usd:.2f} of ${task.max_cost_usd:.2f}",
        f"branch      {task.branch or '-'}  head {task.head_sha[:12] or '-'}",
        f"pr          {task.pr_url or '-'}",
        f"agent       {task.agent or '-'} {task.model}".rstrip(),
        "",
        "attempts:",
    ]
    for a in attempts:
        lines.append(
            f"  {a.number:>3}  {a.kind.value:<15} {a.outcome or 'running':<12} ${a.cost_usd:.2f}  "
            f"{_when(a.started_at)}  {a.summary[:80]}"
        )
    if not attempts:
        lines.append("  (none yet)")
    lines += ["", "events:"]
    for e in events:
        move = f"{e.from_status.value if e.from_status else '-'} -> {e.to_status.value if e.to_status else '-'}"
        lines.append(f"  {_when(e.at)}  {e.kind:<10} {move:<20} {e.actor or '-':<14} {e.reason}")
    return "\n".join(lines)


def format_deliveries(rows: Sequence[Delivery]) -> str:
    if not rows:
        return "no deliveries"
    return table(
        [
            (d.id, _when(d.received_at), f"{d.event}.{d.action}" if d.action else d.event, d.repo or "-",
             d.state.value, (d.ignore_reason or d.outcome)[:70])
            for d in rows
        ],
        ("delivery", "received", "event", "repo", "state", "outcome / ignore reason"),
    )


def format_delivery(d: Delivery) -> str:
    return "\n".join(
        [
            f"delivery      {d.id}",
            f"event         {d.event}.{d.action}" if d.action else f"event         {d.event}",
            f"repo          {d.repo or '-'}  installation {d.installation_id or '-'}",
            f"received      {_when(d.received_at)}",
            f"state         {d.state.value} (attempts {d.attempts}, processed {_when(d.processed_at)})",
            f"outcome       {d.outcome or '-'}",
            f"ignored       {d.ignore_reason or '-'}",
            f"payload       {len(d.payload)} bytes",
        ]
    )


async def run_tasks_list(store: Store, *, status: str | None, repo: str | None, limit: int) -> str:
    statuses = [Status(status)] if status else None
    return format_tasks(await store.list_tasks(statuses=statuses, repo=repo, limit=limit))


async def _task(store: Store, task_id: str) -> Task:
    task = await store.get_task(task_id)
    if task is None:
        raise AdminError(f"no task {task_id!r}: `patchwright tasks list` shows the ids")
    return task


async def run_tasks_show(store: Store, task_id: str) -> str:
    task = await _task(store, task_id)
    return format_task(task, await store.list_attempts(task.id), await store.list_events(task.id))


async def run_tasks_logs(store: Store, task_id: str, attempt: int | None) -> str:
    task = await _task(store, task_id)
    lines = await store.read_logs(task.id, attempt)
    return "\n".join(f"[{n}] {line}" for n, line in lines) if lines else "no log lines"


async def run_tasks_command(services: Services, task_id: str, verb: str, instructions: str = "") -> str:
    """A task verb from the command line (actor ``cli``), through the same operation as a
    comment. Without a GitHub client the status comment on GitHub is refreshed by the next
    event or reconciler pass."""
    try:
        result = await run_task_command(services, task_id, verb, actor=ACTOR, instructions=instructions)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    except LostRaces:
        raise AdminError(f"{task_id} kept changing; try again") from None
    if result is None:
        raise AdminError(f"no task {task_id!r}: `patchwright tasks list` shows the ids")
    if not result.accepted or result.task is None:
        raise AdminError(result.reason)
    return f"{task_id}: {result.previous_status.value} -> {result.task.status.value}"


async def run_deliveries_list(store: Store, *, state: str | None, repo: str | None, limit: int) -> str:
    return format_deliveries(
        await store.list_deliveries(limit=limit, state=DeliveryState(state) if state else None, repo=repo)
    )


async def run_deliveries_show(store: Store, delivery_id: str, *, payload: bool = False) -> str:
    row = await store.get_delivery(delivery_id)
    if row is None:
        raise AdminError(f"no delivery {delivery_id!r}: `patchwright deliveries list` shows the ids")
    text = format_delivery(row)
    if payload:
        text += "\n\n" + json.dumps(json.loads(row.payload), indent=2)
    return text


async def run_deliveries_replay(store: Store, delivery_id: str) -> str:
    if await store.get_delivery(delivery_id) is None:
        raise AdminError(f"no delivery {delivery_id!r}")
    if not await store.requeue_delivery(delivery_id):
        raise AdminError(f"delivery {delivery_id} is still waiting or being processed; nothing to replay")
    await store.notify_deliveries()
    return f"delivery {delivery_id} queued again; a running dispatcher processes it"


def signed_request(body: bytes, *, event: str, secret: str, delivery_id: str | None = None) -> dict[str, str]:
    """The headers GitHub sends with a delivery, signed with ``secret``."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/patchwright-replay",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


def event_from_path(path: Path) -> str | None:
    """``…/webhooks/issues/labeled.json`` → ``issues`` (the folder names the event)."""
    return path.parent.name if path.parent.name not in ("", ".") else None


async def run_replay(path: Path, *, url: str, secret: str, event: str | None) -> str:
    import aiohttp

    body = path.read_bytes()
    try:
        json.loads(body)
    except ValueError as exc:
        raise AdminError(f"{path} is not JSON: {exc}") from None
    event = event or event_from_path(path)
    if not event:
        raise AdminError("cannot tell the event from the path: pass --event NAME")
    headers = signed_request(body, event=event, secret=secret)
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as resp:
        text = await resp.text()
    return f"{resp.status} {text.strip()} (event {event}, delivery {headers['X-GitHub-Delivery']})"
