"""What every handler module shares: the router that checks an event's payload before any
handler sees it, the readers of the payload parts every event has, and the loop guard.

A handler reads its payload, guards, and calls one operation (:mod:`bot.operations`) with
the :class:`~bot.operations.context.Context` the dispatcher hands it."""

from __future__ import annotations

from typing import Any

from gidgethub import routing, sansio

from bot import payloads
from bot.config import RepoConfig
from bot.operations.context import Context
from bot.outcome import Ignored

#: The context every handler receives (the delivery's installation and id, the services).
HandlerContext = Context


class Router(routing.Router):
    """gidgethub's Router, checking first that the payload fits the model of its event kind
    (:mod:`bot.payloads`): a malformed payload is ignored with the reason, and no handler runs,
    so handlers may index the fields the models declare."""

    def fetch(self, event: sansio.Event) -> frozenset[Any]:
        reason = payloads.malformed(event.event, event.data)
        if reason is not None:
            raise Ignored(reason)
        return super().fetch(event)


def repo_name(event: sansio.Event) -> str:
    repo = event.data.get("repository") or {}
    name = repo.get("full_name")
    if not name:
        raise Ignored("the event names no repository")
    return str(name)


def default_branch(event: sansio.Event) -> str:
    return str((event.data.get("repository") or {}).get("default_branch") or "main")


def sender(event: sansio.Event) -> dict[str, Any]:
    return event.data.get("sender") or {}


def sender_login(event: sansio.Event) -> str:
    return str(sender(event).get("login") or "")


async def repo_config(event: sansio.Event, ctx: Context) -> RepoConfig:
    """The repository's config; an invalid file gives defaults (the task start reports it)."""
    config, _error = await ctx.repo_config(repo_name(event), default_branch(event))
    return config


def guard_sender(event: sansio.Event, ctx: Context, config: RepoConfig | None = None,
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


__all__ = [
    "Context",
    "HandlerContext",
    "Ignored",
    "Router",
    "default_branch",
    "guard_sender",
    "repo_config",
    "repo_name",
    "sender",
    "sender_login",
]
