"""The bot's services: what handlers, workers and the reconciler share.

- :class:`TaskService` applies a rule's :class:`~bot.tasks.rules.Decision` with one
  conditional store update, then carries out its effects and refreshes what users see.
- :class:`StatusReporter` keeps the one status comment per issue (found again by its hidden
  marker, also after a restart) and the optional state labels.
- :class:`RepoConfigs` reads ``.github/patchwright.yml`` from the default branch (cached).
- :class:`Services` bundles them with the store, the GitHub client factory and the clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cachetools
import gidgethub

from bot import messages
from bot.config import RepoConfig, Settings, parse_repo_config
from bot.github import api
from bot.github.permissions import PermissionCache, is_permitted
from bot.github.repo_config import fetch_repo_config
from bot.store.base import Store, TaskEvent
from bot.tasks.model import Status, Task
from bot.tasks.rules import Decision, Effect, render_reason
from bot.worker.branches import wip_branch

log = logging.getLogger(__name__)

ALL_STATUSES: tuple[Status, ...] = tuple(Status)
STATE_LABEL_PREFIX = "patchwright:"
STATE_LABELS = {
    Status.RUNNING: "running",
    Status.PENDING: "running",
    Status.REVIEW: "review",
    Status.FAILED: "failed",
    Status.WAITING: "waiting",
}

GitHubFor = Callable[[int], Any]  # installation id -> GitHub client


def jsonable(changes: dict[str, Any]) -> dict[str, Any]:
    """Changes as JSON-friendly values for the audit trail."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, tuple):
            out[key] = list(value)
        elif hasattr(value, "value"):
            out[key] = value.value
        else:
            out[key] = value
    return out


@dataclass
class RepoConfigs:
    """``.github/patchwright.yml`` of each repository's default branch, cached briefly.

    The ETag cache of the installation's client makes a re-read after expiry cost no rate
    limit when the file did not change.
    """

    ttl: float = 60.0
    _cache: cachetools.TTLCache = field(init=False)

    def __post_init__(self) -> None:
        self._cache = cachetools.TTLCache(maxsize=1024, ttl=self.ttl)

    async def get(self, gh: Any, repo: str, default_branch: str) -> tuple[RepoConfig, str | None]:
        """(config, error). An invalid file gives the defaults and the error text to show."""
        key = (repo, default_branch)
        if key in self._cache:
            return self._cache[key]
        result = await fetch_repo_config(gh, repo, default_branch, parse_repo_config)
        if result.error is not None:
            value: tuple[RepoConfig, str | None] = (RepoConfig(), str(result.error))
        else:
            value = (result.value if result.value is not None else RepoConfig(), None)
        self._cache[key] = value
        return value

    def forget(self, repo: str) -> None:
        for key in [k for k in self._cache if k[0] == repo]:
            self._cache.pop(key, None)


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


class TaskService:
    """Applies decisions: one conditional update, then effects, then the status comment."""

    def __init__(
        self,
        store: Store,
        reporter: StatusReporter,
        *,
        mention: str,
        on_stop_agent: Callable[[str], None] | None = None,
    ):
        self.store = store
        self.reporter = reporter
        self.mention = mention
        self.on_stop_agent = on_stop_agent

    async def apply(
        self,
        decision: Decision,
        *,
        gh: Any | None,
        actor: str,
        delivery_id: str = "",
        state_labels: bool = False,
        report: bool = True,
        questions: Sequence[str] = (),
    ) -> Task | None:
        """Persist an accepted decision. None when it was refused or lost a race."""
        if not decision.accepted or decision.previous is None:
            return None
        prev = decision.previous
        reason = decision.reason_for(self.mention)
        event = TaskEvent(
            task_id=prev.id,
            kind="transition" if decision.status_changed else "update",
            reason=reason,
            actor=actor,
            delivery_id=delivery_id,
            from_status=prev.status,
            to_status=decision.task.status,
            changes=jsonable(decision.changes),
        )
        new = await self.store.transition(
            prev.id,
            from_statuses=decision.from_statuses,
            changes=decision.changes,
            event=event,
            expect_version=prev.version,
        )
        if new is None:
            return None
        await self._effects(decision, new, gh, questions)
        if gh is not None and report:
            try:
                new = await self.reporter.update(gh, new, reason=reason)
                if state_labels and decision.status_changed:
                    await self.reporter.state_labels(gh, new, prev.status)
            except gidgethub.GitHubException as exc:  # the reconciler refreshes it later
                log.warning("status comment of %s not updated: %s", new.id, exc)
        return new

    async def decide(
        self,
        task: Task,
        rule: Callable[[Task], Decision],
        *,
        gh: Any | None,
        actor: str,
        delivery_id: str = "",
        state_labels: bool = False,
        tries: int = 5,
    ) -> tuple[Decision, Task | None]:
        """Apply ``rule`` to the task, re-reading and deciding again when a race is lost."""
        decision = rule(task)
        for _ in range(tries):
            if not decision.accepted:
                return decision, None
            new = await self.apply(
                decision, gh=gh, actor=actor, delivery_id=delivery_id, state_labels=state_labels
            )
            if new is not None:
                return decision, new
            fresh = await self.store.get_task(task.id)
            if fresh is None:
                return decision, None
            decision = rule(fresh)
        raise RuntimeError(f"task {task.id}: lost {tries} races in a row applying a decision")

    async def _effects(self, decision: Decision, new: Task, gh: Any | None, questions: Sequence[str]) -> None:
        prev = decision.previous
        assert prev is not None
        for effect in decision.effects:
            try:
                if effect is Effect.WAKE_WORKERS:
                    await self.store.notify_pending()
                elif effect is Effect.STOP_AGENT:
                    if self.on_stop_agent is not None:
                        self.on_stop_agent(prev.id)
                elif gh is None:
                    continue
                elif effect is Effect.CLOSE_PR and prev.pr_number:
                    await api.update_pull(gh, prev.repo, prev.pr_number, state="closed")
                elif effect is Effect.DELETE_BRANCH and prev.branch:
                    await api.delete_branch(gh, prev.repo, prev.branch)
                elif effect is Effect.POST_QUESTIONS and questions:
                    await api.create_comment(
                        gh, new.repo, new.issue_number, messages.render_questions(questions, mention=self.mention)
                    )
            except gidgethub.GitHubException as exc:
                log.warning("effect %s of task %s failed: %s", effect, new.id, exc)


@dataclass
class Services:
    """Everything the handlers, the workers and the reconciler share (built once per process)."""

    settings: Settings
    store: Store
    github_for: GitHubFor
    permissions: PermissionCache
    repo_configs: RepoConfigs
    reporter: StatusReporter
    tasks: TaskService
    clock: Callable[[], datetime]
    app_slug: str
    app_id: int | None = None
    on_forget_installation: Callable[[int], None] | None = None

    def forget_installation(self, installation_id: int) -> None:
        """Drop cached tokens and clients of a removed installation."""
        if self.on_forget_installation is not None:
            self.on_forget_installation(installation_id)

    @property
    def bot_login(self) -> str:
        return f"{self.app_slug}[bot]"

    @property
    def mention(self) -> str:
        return f"@{self.app_slug}"

    async def permitted(self, gh: Any, repo: str, user: str) -> tuple[bool, str]:
        perm = await self.permissions.permission(gh, repo, user)
        return is_permitted(perm), perm


def build_services(
    settings: Settings,
    store: Store,
    *,
    github_for: GitHubFor,
    app_slug: str,
    clock: Callable[[], datetime],
    app_id: int | None = None,
    on_stop_agent: Callable[[str], None] | None = None,
) -> Services:
    mention = f"@{app_slug}"
    reporter = StatusReporter(
        store, mention=mention, bot_login=f"{app_slug}[bot]", unsandboxed=settings.sandbox == "none"
    )
    return Services(
        settings=settings,
        store=store,
        github_for=github_for,
        permissions=PermissionCache(),
        repo_configs=RepoConfigs(),
        reporter=reporter,
        tasks=TaskService(store, reporter, mention=mention, on_stop_agent=on_stop_agent),
        clock=clock,
        app_slug=app_slug,
        app_id=app_id,
    )

