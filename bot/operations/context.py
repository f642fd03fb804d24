"""The context an operation runs in: the services, the installation whose GitHub client it
uses (created on first use), and the delivery it answers, if any (for the audit trail)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import gidgethub

from bot.config import RepoConfig
from bot.github import api
from bot.operations.services import Services
from bot.outcome import Ignored
from bot.tasks.model import Task
from bot.tasks.rules import Decision

log = logging.getLogger(__name__)


@dataclass
class Context:
    """One operation's view of the runtime. ``delivery_id`` is "" outside a webhook (the
    reconciler, a worker, the command line, the web API)."""

    services: Services
    installation_id: int | None
    delivery_id: str = ""
    _gh: Any = field(default=None, repr=False)

    @property
    def gh(self) -> Any:
        """The installation's GitHub client; :class:`Ignored` when there is none."""
        if self._gh is None:
            if self.installation_id is None:
                raise Ignored("the delivery names no installation")
            self._gh = self.services.github(self.installation_id)
            if self._gh is None:
                raise Ignored("this process has no GitHub App credentials")
        return self._gh

    @property
    def gh_or_none(self) -> Any | None:
        """The GitHub client where this process has one, else None."""
        if self._gh is None and self.installation_id is not None:
            self._gh = self.services.github(self.installation_id)
        return self._gh

    @property
    def now(self) -> datetime:
        return self.services.clock()

    @property
    def mention(self) -> str:
        return self.services.mention

    async def repo_config(self, repo: str, default_branch: str) -> tuple[RepoConfig, str | None]:
        """(config, error) of ``repo``: an invalid file gives the defaults and its errors."""
        return await self.services.repo_configs.get(self.gh, repo, default_branch or "main")

    async def apply(self, decision: Decision, *, actor: str, config: RepoConfig | None = None,
                    questions: Sequence[str] = ()) -> Task | None:
        return await self.services.tasks.apply(
            decision,
            gh=self.gh_or_none,
            actor=actor,
            delivery_id=self.delivery_id,
            state_labels=bool(config and config.state_labels),
            questions=questions,
        )

    async def decide(self, task: Task, rule: Callable[[Task], Decision], *, actor: str,
                     config: RepoConfig | None = None) -> tuple[Decision, Task | None]:
        """Apply ``rule`` to the task (deciding again when another process moved it first)."""
        return await self.services.tasks.decide(
            task,
            rule,
            gh=self.gh_or_none,
            actor=actor,
            delivery_id=self.delivery_id,
            state_labels=bool(config and config.state_labels),
        )

    async def decide_or_ignore(self, task: Task, rule: Callable[[Task], Decision], *, actor: str,
                               config: RepoConfig | None = None) -> tuple[Decision, Task]:
        """:meth:`decide`, raising :class:`Ignored` with the rule's reason when it refused."""
        decision, new = await self.decide(task, rule, actor=actor, config=config)
        if new is None:
            raise Ignored(decision.reason_for(self.mention))
        return decision, new

    async def permitted(self, repo: str, login: str) -> tuple[bool, str]:
        return await self.services.permitted(self.gh, repo, login)

    async def require_permission(self, repo: str, login: str) -> str:
        """The sender must have write, maintain or admin (the collaborator permission API)."""
        ok, perm = await self.permitted(repo, login)
        if not ok:
            raise Ignored(f"not permitted: {login} has {perm} permission (needs write, maintain or admin)")
        return perm

    async def react(self, repo: str, subject: str, subject_id: int, content: str) -> None:
        """Add a reaction; a failure to react never fails the operation."""
        try:
            await api.add_reaction(self.gh, repo, subject, subject_id, content)  # type: ignore[arg-type]
        except gidgethub.GitHubException as exc:
            log.warning("could not react %s on %s %s: %s", content, subject, subject_id, exc)

    async def reply(self, repo: str, number: int, body: str) -> None:
        await api.create_comment(self.gh, repo, number, body)


__all__ = ["Context"]
