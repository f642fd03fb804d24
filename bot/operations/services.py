"""What every operation shares, built once per process by the composition root
(:mod:`bot.runtime`) and complete when built: the store, the GitHub client factory, the
caches, the status reporter, the decision applier and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cachetools

from bot.config import RepoConfig, Settings, parse_repo_config
from bot.github.permissions import PermissionCache, is_permitted
from bot.github.repo_config import fetch_repo_config
from bot.github.usage import GitHubUsage
from bot.operations.decisions import AgentStops, TaskService
from bot.operations.status import StatusReporter
from bot.store.base import Store

GitHubFor = Callable[[int], Any]  # installation id -> GitHub client


def _forget_nothing(installation_id: int) -> None:
    """The default when no GitHub client factory caches anything."""


@dataclass(frozen=True, slots=True)
class ConfigState:
    """What ``.github/patchwright.yml`` on the default branch says: the config (the defaults
    when the file is invalid), the error text to show (None when valid or absent), and the
    revision of the file (its blob SHA; "" without a file)."""

    config: RepoConfig
    error: str | None = None
    revision: str = ""


@dataclass
class RepoConfigs:
    """``.github/patchwright.yml`` of each repository's default branch, cached briefly.

    Only a valid (or absent) file is cached, for ``ttl`` seconds: an invalid one is read again
    each time, so that its fix counts at once in every process (a worker never sees the push
    that fixed it). A push to the default branch drops the repository's entry
    (:meth:`forget`). The ETag cache of the installation's client makes a re-read cost no
    rate limit when the file did not change.
    """

    ttl: float = 60.0
    _cache: cachetools.TTLCache = field(init=False)

    def __post_init__(self) -> None:
        self._cache = cachetools.TTLCache(maxsize=1024, ttl=self.ttl)

    async def state(self, gh: Any, repo: str, default_branch: str) -> ConfigState:
        """The config, its error and its revision (see :class:`ConfigState`)."""
        key = (repo, default_branch)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        result = await fetch_repo_config(gh, repo, default_branch, parse_repo_config)
        if result.error is not None:
            return ConfigState(RepoConfig(), str(result.error), result.revision)
        value = ConfigState(result.value if result.value is not None else RepoConfig(), None, result.revision)
        self._cache[key] = value
        return value

    async def get(self, gh: Any, repo: str, default_branch: str) -> tuple[RepoConfig, str | None]:
        """(config, error). An invalid file gives the defaults and the error text to show."""
        found = await self.state(gh, repo, default_branch)
        return found.config, found.error

    def forget(self, repo: str) -> None:
        """Drop what is cached of ``repo`` (its default branch moved)."""
        for key in [k for k in self._cache if k[0] == repo]:
            self._cache.pop(key, None)


@dataclass(frozen=True)
class Services:
    """Everything the handlers, the workers, the reconciler, the CLI and the web API share.

    ``github_for`` is None where the process has no GitHub App credentials (the command
    line without a key): operations then change the store and skip what needs GitHub."""

    settings: Settings
    store: Store
    github_for: GitHubFor | None
    permissions: PermissionCache
    repo_configs: RepoConfigs
    reporter: StatusReporter
    tasks: TaskService
    clock: Callable[[], datetime]
    app_slug: str
    app_id: int | None = None
    forget_installation: Callable[[int], None] = _forget_nothing
    """Drop the cached token and client of a removed installation."""
    github_usage: GitHubUsage | None = None
    """What this process's GitHub clients sent (None without a GitHub client factory)."""

    @property
    def agent_stops(self) -> AgentStops:
        return self.tasks.agent_stops

    @property
    def bot_login(self) -> str:
        return f"{self.app_slug}[bot]"

    @property
    def mention(self) -> str:
        return f"@{self.app_slug}"

    def github(self, installation_id: int | None) -> Any | None:
        """The installation's GitHub client, or None when this process has none."""
        if self.github_for is None or installation_id is None:
            return None
        return self.github_for(installation_id)

    async def permitted(self, gh: Any, repo: str, user: str) -> tuple[bool, str]:
        perm = await self.permissions.permission(gh, repo, user)
        return is_permitted(perm), perm


def build_services(
    settings: Settings,
    store: Store,
    *,
    github_for: GitHubFor | None,
    app_slug: str,
    clock: Callable[[], datetime],
    app_id: int | None = None,
    forget_installation: Callable[[int], None] = _forget_nothing,
    github_usage: GitHubUsage | None = None,
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
        tasks=TaskService(store, reporter, mention=mention),
        clock=clock,
        app_slug=app_slug,
        app_id=app_id,
        forget_installation=forget_installation,
        github_usage=github_usage,
    )


#: The mention a process without GitHub App credentials names the bot by.
OFFLINE_APP_SLUG = "patchwright"


def offline_services(settings: Settings, store: Store, *, clock: Callable[[], datetime]) -> Services:
    """The services of a process without a GitHub client (the command line, a web process
    started without a runtime): operations change the store and leave GitHub alone."""
    return build_services(
        settings, store, github_for=None, app_slug=settings.app_slug or OFFLINE_APP_SLUG, clock=clock
    )


__all__ = ["OFFLINE_APP_SLUG", "offline_services", "ConfigState", "GitHubFor", "RepoConfigs", "Services", "build_services"]
