"""Who may steer the bot: a user's permission on a repository (SPEC §4).

``author_association`` in webhook payloads is not enough (an org member can be a stranger to
the repository), so the collaborator permission API is asked and the answer cached for a few
minutes per (repository, user).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import cachetools
import gidgethub
import gidgethub.abc

from bot.github import api

PERMITTED = frozenset({"write", "maintain", "admin"})
STANDARD_ROLES = frozenset({"read", "triage", "write", "maintain", "admin"})
NO_PERMISSION = "none"


def is_permitted(permission: str) -> bool:
    """Whether ``permission`` allows commands and feedback: write, maintain or admin."""
    return permission.lower() in PERMITTED


def effective_permission(data: Mapping[str, Any]) -> str:
    """The role from a collaborator-permission answer.

    ``role_name`` names maintain/triage precisely; a custom role's ``role_name`` is its own
    name, so then the legacy ``permission`` (the base role: admin/write/read/none) decides.
    """
    role = str(data.get("role_name") or "").lower()
    if role in STANDARD_ROLES:
        return role
    legacy = str(data.get("permission") or "").lower()
    return legacy or NO_PERMISSION


class PermissionCache:
    """Collaborator permissions cached for ``ttl`` seconds (``timer`` is injectable)."""

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        maxsize: int = 4096,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache: cachetools.TTLCache[tuple[str, str], str] = cachetools.TTLCache(
            maxsize=maxsize, ttl=ttl, timer=timer
        )

    async def permission(self, gh: gidgethub.abc.GitHubAPI, repo: str, user: str) -> str:
        """``admin``/``maintain``/``write``/``triage``/``read``/``none`` (404 → ``none``)."""
        key = (repo.lower(), user.lower())
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            data = await api.get_collaborator_permission(gh, repo, user)
        except gidgethub.BadRequest as exc:
            if int(exc.status_code) != 404:
                raise
            value = NO_PERMISSION
        else:
            value = effective_permission(data)
        self._cache[key] = value
        return value

    async def is_permitted_user(self, gh: gidgethub.abc.GitHubAPI, repo: str, user: str) -> bool:
        return is_permitted(await self.permission(gh, repo, user))

    def forget(self, repo: str, user: str | None = None) -> None:
        """Drop cached answers for a repository (one user, or all of them)."""
        repo_key = repo.lower()
        for key in list(self._cache.keys()):
            if key[0] == repo_key and (user is None or key[1] == user.lower()):
                self._cache.pop(key, None)
