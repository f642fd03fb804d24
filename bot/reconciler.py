"""The reconciler (SPEC §2): at start-up and periodically, compare every task in ``review``
with its PR on GitHub, so a missed webhook never leaves a task stuck.

GitHub does not redeliver failed webhooks by itself. Reads are conditional (the installation
client's ETag cache: an unchanged PR answers 304, which costs no rate limit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import gidgethub

from bot.github import api
from bot.operations import pulls
from bot.operations.ci import evaluate_head
from bot.operations.context import Context
from bot.operations.services import Services
from bot.outcome import Ignored
from bot.tasks.model import Status, Task

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, services: Services, *, interval: float = 300.0):
        self._services = services
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
        ctx = Context(self._services, task.installation_id)
        pr = await api.get_pull(ctx.gh, task.repo, task.pr_number)
        if pr.get("merged") or pr.get("state") == "closed":
            decision, _new = await pulls.pr_ended(ctx, task, merged=bool(pr.get("merged")), actor="reconciler")
            return decision.reason_for(ctx.mention)
        head = str((pr.get("head") or {}).get("sha") or "")
        if head != task.head_sha:
            return f"head is {head[:7]}, not the bot's {task.head_sha[:7]} (human push); nothing to decide"
        if pr.get("mergeable") is False or pr.get("mergeable_state") == "dirty":
            return "; ".join(await pulls.check_conflicts(ctx, task.repo, [task], actor="reconciler"))
        return await evaluate_head(ctx, task.repo, head, branch=task.branch, actor="reconciler")
