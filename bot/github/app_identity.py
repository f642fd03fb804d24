"""Who the App is: its slug (the @mention the bot answers to) and id."""

from __future__ import annotations

from bot.config import Settings
from bot.github import api
from bot.github.client import GitHubClientFactory


async def resolve_app_slug(settings: Settings, github: GitHubClientFactory) -> tuple[str, int | None]:
    """The App's slug and id: from the settings, else from ``GET /app``."""
    if settings.app_slug:
        return settings.app_slug, settings.app_id
    app = await api.get_app(github.for_app())
    return str(app["slug"]), int(app["id"])
