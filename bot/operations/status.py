"""What users see of a task on GitHub: the one status comment per issue (edited in place,
found again by its hidden marker, also after a restart) and the optional state labels."""

from __future__ import annotations

import asyncio
from typing import Any

import cachetools
import gidgethub

from bot import messages
from bot.github import api
from bot.store.base import Store
from bot.tasks.branches import wip_branch
from bot.tasks.model import Status, Task
from bot.tasks.rules import render_reason

ALL_STATUSES: tuple[Status, ...] = tuple(Status)
STATE_LABEL_PREFIX = "patchwright:"
STATE_LABELS = {
    Status.RUNNING: "running",
    Status.PENDING: "running",
    Status.REVIEW: "review",
    Status.FAILED: "failed",
    Status.WAITING: "waiting",
}


class StatusReporter:
    """The status comment (one per issue, edited in place) and the optional state labels."""

    def __init__(self, store: Store, *, mention: str, bot_login: str, unsandboxed: bool = False):
        self._store = store
        self._unsandboxed = unsandboxed
        self._mention = mention
        self._bot_login = bot_login
        self._last_body: cachetools.LRUCache = cachetools.LRUCache(maxsize=4096)
        self._locks: cachetools.LRUCache = cachetools.LRUCache(maxsize=4096)

    def _lock(self, task_id: str) -> asyncio.Lock:
        lock = self._locks.get(task_id)
        if lock is None:
            lock = self._locks[task_id] = asyncio.Lock()
        return lock

    async def card(self, task: Task, *, reason: str = "", trigger_label: str = "patchwright") -> messages.StatusCard:
        attempts = await self._store.list_attempts(task.id)
        return messages.StatusCard(
            status=task.status.value,
            attempt=task.attempt,
            max_attempts=task.max_attempts,
            attempts=[
                messages.AttemptLine(
                    a.number,
                    a.kind.value,
                    a.outcome or "running",
                    a.cost_usd,
                    a.summary,
                    cost_known=a.cost_known,
                    refused=tuple(a.refused.splitlines()),
                )
                for a in attempts
            ],
            cost_usd=task.cost_usd,
            max_cost_usd=task.max_cost_usd,
            pr_url=task.pr_url,
            last_error=task.close_reason if task.status == Status.FAILED else "",
            mention=self._mention,
            reason=render_reason(reason or task.retry_reason, self._mention),
            trigger_label=trigger_label,
            unsandboxed=self._unsandboxed,
            salvage_branches=[wip_branch(task.id, a.number) for a in attempts if a.outcome == "salvaged"],
        )

    async def update(self, gh: Any, task: Task, *, reason: str = "") -> Task:
        """Create or edit the status comment; returns the task (with its comment id stored)."""
        async with self._lock(task.id):
            body = messages.render_status_comment(await self.card(task, reason=reason))
            comment_id = task.status_comment_id
            if comment_id is not None and self._last_body.get(comment_id) == body:
                return task
            if comment_id is not None:
                try:
                    await api.update_comment(gh, task.repo, comment_id, body)
                    self._last_body[comment_id] = body
                    return task
                except gidgethub.BadRequest as exc:
                    if getattr(exc, "status_code", None) != 404:
                        raise
                    comment_id = None  # deleted by someone: find or create again
            found = await api.find_comment(gh, task.repo, task.issue_number, messages.STATUS_MARKER, author=self._bot_login)
            if found is not None:
                comment_id = int(found["id"])
                if found.get("body") != body:
                    await api.update_comment(gh, task.repo, comment_id, body)
            else:
                created = await api.create_comment(gh, task.repo, task.issue_number, body)
                comment_id = int(created["id"])
            self._last_body[comment_id] = body
            if comment_id != task.status_comment_id:
                stored = await self._store.transition(
                    task.id, from_statuses=ALL_STATUSES, changes={"status_comment_id": comment_id}
                )
                if stored is not None:
                    return stored
            return task

    async def state_labels(self, gh: Any, task: Task, previous: Status | None) -> None:
        """Swap the ``patchwright:<state>`` label when the state changes (per-repo option)."""
        old = STATE_LABELS.get(previous) if previous is not None else None
        new = STATE_LABELS.get(task.status)
        if old == new:
            return
        if old:
            await api.remove_label(gh, task.repo, task.issue_number, STATE_LABEL_PREFIX + old)
        if new:
            await api.add_labels(gh, task.repo, task.issue_number, [STATE_LABEL_PREFIX + new])


__all__ = ["ALL_STATUSES", "STATE_LABELS", "STATE_LABEL_PREFIX", "StatusReporter"]
