"""The reconciler (SPEC §2): at start-up and periodically, compare every task in ``review``
with its PR on GitHub, so a missed webhook never leaves a task stuck.

GitHub does not redeliver failed webhooks by itself. Reads are conditional (the installation
client's ETag cache: an unchanged PR answers 304, which costs no rate limit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import gidgethub

from bot.dispatcher import Ignored
from bot.github import api
from bot.services import Services
from bot.store.base import Delivery
from bot.tasks import rules
from bot.tasks.model import Status, Task

log = logging.getLogger(__name__)

EvaluateHead = Callable[..., Awaitable[str]]
CheckConflicts = Callable[..., Awaitable[list[str]]]


class Reconciler:
    def __init__(
        self,
        services: Services,
        *,
        make_context: Callable[[Delivery], Awaitable[Any]],
        evaluate_head: EvaluateHead,
        check_conflicts: CheckConflicts,
        interval: float = 300.0,
    ):
        self._services = services
        self._make_context = make_context
        self._evaluate_head = evaluate_head
        self._check_conflicts = check_conflicts
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> Callable[[], Awaitable[None]]:
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name="reconciler")
        return self.stop

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("reconciler pass failed")
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)
            except asyncio.TimeoutError:
                pass

    async def run_once(self) -> list[str]:
        """One pass over the tasks in review; returns what it did, a line per task."""
        done = []
        for task in await self._services.store.list_tasks(statuses=[Status.REVIEW], limit=10_000):
            try:
                done.append(f"{task.id}: {await self.reconcile(task)}")
            except Ignored as exc:
                done.append(f"{task.id}: {exc.reason}")
            except gidgethub.GitHubException as exc:
                log.warning("reconciling %s failed: %s", task.id, exc)
                done.append(f"{task.id}: failed ({exc})")
        return done

    async def reconcile(self, task: Task) -> str:
        if not task.pr_number:
            return "no pull request"
        now = self._services.clock()
        ctx = await self._make_context(
            Delivery(
                id=f"reconcile-{task.id}-{int(now.timestamp())}",
                event="reconcile",
                action="",
                repo=task.repo,
                installation_id=task.installation_id,
                payload=b"{}",
                received_at=now,
            )
        )
        pr = await api.get_pull(ctx.gh, task.repo, task.pr_number)
        if pr.get("merged"):
            rule = lambda t: rules.pr_merged(t, pr_number=task.pr_number, now=now)  # noqa: E731
        elif pr.get("state") == "closed":
            rule = lambda t: rules.pr_closed(t, pr_number=task.pr_number, now=now)  # noqa: E731
        else:
            rule = None
        if rule is not None:
            decision, new = await self._services.tasks.decide(task, rule, gh=ctx.gh, actor="reconciler")
            return decision.reason_for(self._services.mention)
        head = str((pr.get("head") or {}).get("sha") or "")
        if head != task.head_sha:
            return f"head is {head[:7]}, not the bot's {task.head_sha[:7]} (human push); nothing to decide"
        if pr.get("mergeable") is False or pr.get("mergeable_state") == "dirty":
            return "; ".join(await self._check_conflicts(ctx, task.repo, [task], actor="reconciler"))
        return await self._evaluate_head(ctx, task.repo, head, branch=task.branch, actor="reconciler")
