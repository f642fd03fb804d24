"""Who the App is (``GET /app`` with its JWT): its id and slug (the @mention the bot answers
to), asked once at start-up and held to the settings; tried again while GitHub cannot be
reached, so that a process started while GitHub or the network is down waits for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import gidgethub

from bot import errors
from bot.config import Settings
from bot.errors import ExitCode, UserError
from bot.github import api
from bot.github.client import GitHubClientFactory

log = logging.getLogger(__name__)

#: Seconds between tries while GitHub cannot be reached at start-up; the last one repeats.
GITHUB_RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
#: What "GitHub cannot be reached" is: no connection, a timeout, 5xx or a rate limit that
#: outlasted the client's own retries.
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    gidgethub.GitHubBroken,
    gidgethub.RateLimitExceeded,
)


class GitHubUnreachable(UserError):
    """GitHub could not be asked (network, 5xx, rate limit): worth trying again later."""

    code = ExitCode.GITHUB


@dataclass(frozen=True)
class AppIdentity:
    """The App as GitHub knows it (``GET /app``)."""

    id: int
    slug: str
    name: str
    html_url: str


async def identify_app(settings: Settings, github: GitHubClientFactory) -> AppIdentity:
    """Ask GitHub who the App is, with its JWT (``GET /app``), once, and hold the answer to
    the settings. Raises :class:`GitHubUnreachable` when GitHub cannot be asked, and a
    :class:`UserError` (exit code 3) when it refuses the App's id or key or
    ``PATCHWRIGHT_APP_SLUG`` names another App."""
    url = settings.github_url
    try:
        data = await api.get_app(github.for_app())
    except UNREACHABLE_ERRORS as exc:
        raise GitHubUnreachable(
            errors.GITHUB_UNREACHABLE.format(url=url, error=errors.one_line(_describe(exc)))
        ) from None
    except gidgethub.HTTPException as exc:
        message = errors.one_line(str(exc)) or exc.status_code.phrase
        raise UserError(
            errors.GITHUB_REFUSED_APP.format(
                url=url, status=int(exc.status_code), message=message, app_id=settings.app_id
            ),
            code=ExitCode.GITHUB,
        ) from None
    if not isinstance(data, dict) or not data.get("slug") or not isinstance(data.get("id"), int):
        raise UserError(errors.NOT_GITHUB.format(url=url), code=ExitCode.GITHUB)
    app = AppIdentity(
        id=int(data["id"]),
        slug=str(data["slug"]),
        name=str(data.get("name") or data["slug"]),
        html_url=str(data.get("html_url") or ""),
    )
    if settings.app_slug and settings.app_slug != app.slug:
        raise UserError(
            errors.APP_SLUG_MISMATCH.format(configured=settings.app_slug, app_id=app.id, actual=app.slug),
            code=ExitCode.GITHUB,
        )
    return app


async def wait_for_app(
    settings: Settings,
    github: GitHubClientFactory,
    *,
    delays: tuple[float, ...] = GITHUB_RETRY_DELAYS,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> AppIdentity:
    """:func:`identify_app`, tried again (with backoff, logged) for as long as GitHub cannot
    be reached: a process that starts while GitHub or the network is down waits for it
    instead of crashing. A refusal ends it at once."""
    tries = 0
    while True:
        try:
            return await identify_app(settings, github)
        except GitHubUnreachable as exc:
            delay = delays[min(tries, len(delays) - 1)]
            tries += 1
            log.warning("%s", errors.GITHUB_RETRYING.format(error=exc, delay=delay))
            await sleep(delay)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
