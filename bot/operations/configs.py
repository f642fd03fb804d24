"""The repository's ``.github/patchwright.yml`` between its revisions (SPEC §5): an invalid
file is reported on an issue once per revision, and a push to the default branch drops the
cached config so that a fix counts at once."""

from __future__ import annotations

import logging

from bot import messages
from bot.github import api
from bot.operations.context import Context
from bot.outcome import Ignored

log = logging.getLogger(__name__)


async def report_invalid_config(ctx: Context, repo: str, number: int, *, error: str, revision: str) -> bool:
    """Comment the config's errors on issue ``number``, unless the bot already did for this
    ``revision`` of the file (found by the report's hidden marker, bedevere style). True
    when it commented.

    The opened and labeled events of one issue, a retry, and the label removed and added
    again all meet the same invalid file: it is reported once, and again only once the file
    changed. Deliveries of one repository are handled one at a time, so looking before
    commenting is enough."""
    marker = messages.config_invalid_marker(revision)
    comments = [c async for c in api.list_comments(ctx.gh, repo, number)]
    if messages.find_marked_comment(comments, marker, author=ctx.services.bot_login) is not None:
        return False
    await ctx.reply(repo, number, messages.config_invalid_report(error.splitlines(), revision, mention=ctx.mention))
    return True


async def default_branch_pushed(ctx: Context, repo: str, *, branch: str, default_branch: str) -> str:
    """A push to ``branch`` of ``repo``: on the default branch, drop the cached config.

    Every push to the default branch drops it, not only one whose listed commits touch the
    file: a push's commit list may be cut short or empty (a force push back to an older
    commit lists none), and reading the file again costs one conditional request, free of
    rate limit when the file did not change."""
    if branch != default_branch:
        raise Ignored(f"{branch} is not the default branch ({default_branch})")
    ctx.services.repo_configs.forget(repo)
    return f"dropped the cached config of {repo} ({default_branch} moved)"


__all__ = ["default_branch_pushed", "report_invalid_config"]
