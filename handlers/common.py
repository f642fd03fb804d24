"""What every handler module shares: the context it receives, the guards it runs first, and the
router that checks an event's payload before any handler sees it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import gidgethub
from gidgethub import routing, sansio

from bot import messages, payloads
from bot.config import RepoConfig
from bot.dispatcher import Ignored
from bot.github import api
from bot.services import Services
from bot.store.base import Delivery
from bot.tasks.model import Task
from bot.tasks.rules import Decision

log = logging.getLogger(__name__)


class Router(routing.Router):
    """gidgethub's Router, checking first that the payload fits the model of its event kind
    (:mod:`bot.payloads`): a malformed payload is ignored with the reason, and no handler runs,
    so handlers may index the fields the models declare."""

    def fetch(self, event: sansio.Event) -> frozenset[Any]:
        reason = payloads.malformed(event.event, event.data)
        if reason is not None:
            raise Ignored(reason)
        return super().fetch(event)


@dataclass
class HandlerContext:
    """What a handler gets besides the event: the services and this delivery's GitHub client."""

    services: Services
    delivery: Delivery
    _gh: Any = field(default=None, repr=False)

    @property
    def gh(self) -> Any:
        if self._gh is None:
            if self.delivery.installation_id is None:
                raise Ignored("the delivery names no installation")
            self._gh = self.services.github_for(self.delivery.installation_id)
        return self._gh

    @property
    def now(self):
        return self.services.clock()

    async def config(self, event: sansio.Event) -> RepoConfig:
        """The repository's config; an invalid file gives defaults (the task start reports it)."""
        config, _error = await self.config_with_error(event)
        return config

    async def config_with_error(self, event: sansio.Event) -> tuple[RepoConfig, str | None]:
        repo = event.data["repository"]
        return await self.services.repo_configs.get(
            self.gh, repo["full_name"], repo.get("default_branch") or "main"
        )

    async def apply(self, decision: Decision, *, actor: str, config: RepoConfig | None = None,
                    questions: tuple[str, ...] = ()) -> Task | None:
        return await self.services.tasks.apply(
            decision,
            gh=self.gh,
            actor=actor,
            delivery_id=self.delivery.id,
            state_labels=bool(config and config.state_labels),
            questions=questions,
        )

    async def decide(self, task: Task, rule, *, actor: str, config: RepoConfig | None = None):
        return await self.services.tasks.decide(
            task,
            rule,
            gh=self.gh,
            actor=actor,
            delivery_id=self.delivery.id,
            state_labels=bool(config and config.state_labels),
        )


def repo_name(event: sansio.Event) -> str:
    repo = event.data.get("repository") or {}
    name = repo.get("full_name")
    if not name:
        raise Ignored("the event names no repository")
    return str(name)


def sender(event: sansio.Event) -> dict[str, Any]:
    return event.data.get("sender") or {}


def guard_sender(event: sansio.Event, ctx: HandlerContext, config: RepoConfig | None = None,
                 *, user: dict[str, Any] | None = None) -> str:
    """Loop guard and bot filter (SPEC §4): returns the acting login, or raises Ignored."""
    who = user if user is not None else sender(event)
    login = str(who.get("login") or "")
    if not login:
        raise Ignored("no sender")
    if login.lower() == ctx.services.bot_login.lower():
        raise Ignored("sent by the bot itself (loop guard)")
    if who.get("type") == "Bot" or login.endswith("[bot]"):
        allowed = {b.lower().removesuffix("[bot]") for b in (config.allowed_bots if config else [])}
        if login.lower().removesuffix("[bot]") not in allowed:
            raise Ignored(f"sent by another bot ({login}) that the repo config does not allow")
    return login


async def require_permission(ctx: HandlerContext, repo: str, login: str) -> str:
    """The sender must have write, maintain or admin (the collaborator permission API)."""
    ok, perm = await ctx.services.permitted(ctx.gh, repo, login)
    if not ok:
        raise Ignored(f"not permitted: {login} has {perm} permission (needs write, maintain or admin)")
    return perm


async def react(ctx: HandlerContext, repo: str, subject: str, subject_id: int, content: str) -> None:
    """Add a reaction; a failure to react never fails the handler."""
    try:
        await api.add_reaction(ctx.gh, repo, subject, subject_id, content)  # type: ignore[arg-type]
    except gidgethub.GitHubException as exc:
        log.warning("could not react %s on %s %s: %s", content, subject, subject_id, exc)


async def reply(ctx: HandlerContext, repo: str, number: int, body: str) -> None:
    await api.create_comment(ctx.gh, repo, number, body)


__all__ = [
    "HandlerContext",
    "Ignored",
    "Router",
    "guard_sender",
    "messages",
    "react",
    "reply",
    "repo_name",
    "require_permission",
    "sender",
]
