"""The bot's GitHub client against the emulator's rate-limit faults (issue 14, criterion 4):
a secondary limit that GitHub answers with 403 and no ``retry-after`` is waited out (at least
a minute, by GitHub's rules) and the request then succeeds; it is never a permission error."""

from __future__ import annotations

import pytest

from bot.github import api
from bot.github.auth import AppCredentials
from bot.github.client import GitHubClientFactory

REPO = "octo-org/hello"


@pytest.mark.parametrize("status_code", [403, 429])
async def test_a_secondary_limit_without_retry_after_is_waited_out_then_the_request_succeeds(world, status_code):
    emulator = world.emulator
    issue = await emulator.open_issue(REPO, title="Rate limits", body="", user="alice")
    waits: list[float] = []

    async def a_minute_passes(seconds: float) -> None:
        waits.append(seconds)
        emulator.faults.configure({"secondary_rate_limit_rate": 0.0})  # the limit lifts meanwhile

    github = GitHubClientFactory(
        world.session,
        AppCredentials(str(world.app["id"]), world.private_key),
        base_url=emulator.base_url,
        sleep=a_minute_passes,
    )
    gh = github.for_installation(world.installation_id)
    await github.tokens.installation_token(world.installation_id)  # before the limit starts
    emulator.faults.configure(
        {"secondary_rate_limit_rate": 1.0, "secondary_rate_limit_statuses": [status_code], "retry_after": None}
    )

    made = await api.create_comment(gh, REPO, int(issue["number"]), "posted after the limit lifted")

    assert made["body"] == "posted after the limit lifted"
    assert emulator.faults.injected["secondary_rate_limit"] == 1
    assert waits == [60.0]  # GitHub: without retry-after, wait at least a minute
