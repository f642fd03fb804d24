"""The installation token never reaches argv, the remote URL, a file or an error message."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.worker.git import (
    GitAuth,
    GitAuthError,
    GitCommandError,
    GitResult,
    GitRunner,
    redact_git_output,
)

BRANCH = "patchwright/1-fix-it"


async def test_token_never_in_argv_files_or_config(harness, token: str, leaks) -> None:
    remote = harness.remote
    auth = remote.auth
    needles = leaks.token_forms(token)
    async with leaks.sampling_cmdlines() as sampler:
        co = await harness.checkout()
        harness.write(co.path, {"src/app.py": "def greet():\n    return 'hello'\n"})
        first = await co.commit_all("First")
        assert (await co.push(expected_remote=None, auth=auth)).ok
        # A human pushes meanwhile: lease rejected, fetch, rebase, push again.
        await remote.human_commit(BRANCH, {"docs/human.md": "human\n"})
        harness.write(co.path, {"NEW.md": "bot\n"})
        await co.commit_all("Second")
        pushed = await co.push(expected_remote=first, auth=auth)
        assert pushed.ok and pushed.rebased
        # Salvage, a conflicting base merge, its conclusion and push.
        harness.write(co.path, {"wip.txt": "unfinished\n"})
        assert await co.salvage(task_id="task_01", attempt=1, auth=auth) is not None
        (co.path / "wip.txt").unlink()
        await remote.human_commit("main", {"src/app.py": "def greet():\n    return 'hey'\n"})
        outcome = await co.merge_base(auth=auth)
        assert not outcome.clean
        harness.write(co.path, {"src/app.py": "def greet():\n    return 'hello, hey'\n"})
        await co.conclude_merge()
        assert (await co.push(expected_remote=pushed.sha, auth=auth)).ok
        again = await harness.checkout(fresh=False)
        assert await again.head() == await remote.sha(BRANCH)

    assert sampler.containing(needles) == []
    assert sampler.samples > 10
    # The sampler really watched git at work over the network.
    assert sampler.git_commands() & {"fetch", "push", "remote-http"}, sampler.git_commands()

    assert leaks.files_containing(harness.data_dir, needles) == []
    configs = [p for p in harness.data_dir.rglob("config") if p.is_file()]
    configs += [p for p in harness.data_dir.rglob(".git") if p.is_file()]
    assert configs
    for path in configs:
        text = path.read_bytes()
        assert not any(n in text for n in needles), path
        assert b"extraheader" not in text.lower() and b"x-access-token" not in text
    url_config = (harness.data_dir / "repos" / "octo" / "demo.git" / "config").read_text()
    assert "url" not in url_config.lower()


async def test_wrong_token_fails_with_a_clear_redacted_error(harness, leaks) -> None:
    wrong = "ghs_" + "W" * 36
    with pytest.raises(GitAuthError) as failed:
        await harness.checkout(auth=GitAuth(wrong))
    message = str(failed.value)
    assert "authentication failed" in message
    assert wrong not in message and wrong not in failed.value.output
    for form in leaks.token_forms(wrong):
        assert form.decode() not in message and form.decode() not in failed.value.output
    assert not (harness.data_dir / "work" / "task_01").exists()
    assert leaks.files_containing(harness.data_dir, leaks.token_forms(wrong)) == []


async def test_revoked_token_makes_push_fail_without_showing_it(harness) -> None:
    co = await harness.checkout()
    harness.write(co.path, {"x.txt": "x\n"})
    await co.commit_all("x")
    old = harness.remote.token
    harness.remote.token = "ghs_" + "N" * 36  # the installation token was rotated
    with pytest.raises(GitAuthError) as failed:
        await co.push(expected_remote=None, auth=GitAuth(old))
    assert old not in str(failed.value) and old not in failed.value.output
    assert await harness.remote.sha(BRANCH) is None


async def test_tampered_repository_config_cannot_redirect_the_token(
    harness, tmp_path: Path
) -> None:
    """An agent that rewrites git config, hooks or the checkout's ``.git`` file cannot make
    the bot's network commands run its code or send the token elsewhere."""
    co = await harness.checkout()
    cache = harness.data_dir / "repos" / "octo" / "demo.git"
    marker = tmp_path / "hook-ran"
    evil = "http://127.0.0.1:9/evil.git"
    with (cache / "config").open("a") as config:
        config.write(f'[url "{evil}"]\n\tinsteadOf = {harness.remote.url}\n')
        config.write("[credential]\n\thelper = !touch " + str(marker) + "\n")
    for hook in ("pre-push", "reference-transaction", "post-checkout", "pre-commit"):
        path = cache / "hooks" / hook
        path.write_text(f"#!/bin/sh\ntouch {marker}\n")
        path.chmod(0o755)
    (co.path / ".git").write_text("gitdir: /nonexistent\n")

    harness.write(co.path, {"x.txt": "x\n"})
    sha = await co.commit_all("x")
    result = await co.push(expected_remote=None, auth=harness.remote.auth)
    assert result.ok and await harness.remote.sha(BRANCH) == sha
    assert not marker.exists()
    assert "evil" not in (cache / "config").read_text()


def test_redaction_of_git_output() -> None:
    token = "ghs_" + "R" * 36
    auth = GitAuth(token)
    text = (
        f"fatal: unable to access 'https://x-access-token:{token}@github.com/o/r.git/'\n"
        f"> Authorization: Basic {auth.basic}\n"
        f"token {token} and custom-token-without-pattern\n"
    )
    cleaned = redact_git_output(text, auth.secrets())
    assert token not in cleaned and auth.basic not in cleaned
    assert "[REDACTED]" in cleaned
    custom = GitAuth("plain-opaque-value-123")
    error = GitRunner.error(
        "fetch",
        GitResult(128, b"", b"fatal: plain-opaque-value-123 rejected: Authentication failed\n"),
        custom,
    )
    assert isinstance(error, GitAuthError) and isinstance(error, GitCommandError)
    assert (
        "plain-opaque-value-123" not in str(error) and "plain-opaque-value-123" not in error.output
    )
