"""Real git clone/commit/push against the emulator with an installation token in a header."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from bot.sandbox.gitrepos import git_env


def _env(token: str | None) -> dict[str, str]:
    """git's environment: the token only travels in an http.extraHeader given by environment."""
    extra = {
        "GIT_AUTHOR_NAME": "patchwright[bot]",
        "GIT_AUTHOR_EMAIL": "bot@example.com",
        "GIT_COMMITTER_NAME": "patchwright[bot]",
        "GIT_COMMITTER_EMAIL": "bot@example.com",
    }
    if token is not None:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        extra.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )
    return git_env(extra)


async def git(*args: str, cwd: Path | None = None, token: str | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=_env(token),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(errors="replace")


async def clone(world, tmp_path: Path, token: str | None) -> tuple[int, str, Path]:
    target = tmp_path / "clone"
    code, out = await git("clone", "--quiet", world.emulator.clone_url(world.repo), str(target), token=token)
    return code, out, target


async def test_clone_commit_push_with_token_in_header(world, tmp_path):
    code, out, checkout = await clone(world, tmp_path, world.token)
    assert code == 0, out
    assert (checkout / "src" / "app.py").read_text().startswith("def answer")
    config = (checkout / ".git" / "config").read_text()
    assert world.token not in config and "extraHeader" not in config

    (checkout / "src" / "app.py").write_text("def answer():\n    return 42\n")
    await git("checkout", "--quiet", "-b", "patchwright/1-answer", cwd=checkout)
    await git("commit", "--quiet", "-am", "Return 42", cwd=checkout)
    code, out = await git(
        "push", "--quiet", "origin", "patchwright/1-answer", cwd=checkout, token=world.token
    )
    assert code == 0, out
    await world.settle()
    push = world.receiver.of("push")[0].data
    assert push["ref"] == "refs/heads/patchwright/1-answer" and push["created"] is True
    assert push["sender"]["login"] == "patchwright[bot]" and push["sender"]["type"] == "Bot"
    assert push["pusher"]["name"] == "patchwright[bot]"
    assert push["head_commit"]["message"].strip() == "Return 42"
    assert push["head_commit"]["modified"] == ["src/app.py"]

    gh = world.gh()
    pr = await gh.post(
        f"/repos/{world.repo}/pulls", data={"title": "Answer", "head": "patchwright/1-answer", "base": "main"}
    )
    first = await gh.getitem(f"/repos/{world.repo}/pulls/{pr['number']}")
    assert (first["mergeable"], first["mergeable_state"]) == (None, "unknown")  # computed lazily
    assert (await world.read_pull(pr["number"]))["mergeable_state"] == "clean"
    await world.forget_hooks()

    # a second push updates the PR: synchronize, and mergeability is unknown until read again
    (checkout / "NOTES.md").write_text("notes\n")
    await git("add", "NOTES.md", cwd=checkout)
    await git("commit", "--quiet", "-m", "Notes", cwd=checkout)
    code, out = await git("push", "--quiet", "origin", "HEAD", cwd=checkout, token=world.token)
    assert code == 0, out
    await world.settle()
    assert world.receiver.events() == [
        ("push", None),
        ("pull_request", "synchronize"),
        ("check_suite", "requested"),
    ]
    sync = world.receiver.of("pull_request", "synchronize")[0].data
    assert sync["before"] == pr["head"]["sha"] and sync["after"] != sync["before"]
    assert sync["pull_request"]["head"]["sha"] == sync["after"]
    assert sync["pull_request"]["mergeable"] is None and sync["pull_request"]["mergeable_state"] == "unknown"
    fetched = await world.read_pull(pr["number"])
    assert fetched["head"]["sha"] == sync["after"] and fetched["mergeable"] is True
    assert fetched["commits"] == 2 and fetched["changed_files"] == 2

    # fetch works with the token too
    code, out = await git("fetch", "--quiet", "origin", cwd=checkout, token=world.token)
    assert code == 0, out


async def test_git_refuses_missing_unknown_and_expired_tokens(world, tmp_path, clock):
    code, out, _ = await clone(world, tmp_path / "a", None)
    assert code != 0 and ("401" in out or "Authentication failed" in out or "could not read" in out.lower())
    code, _, _ = await clone(world, tmp_path / "b", "ghs_" + "x" * 36)
    assert code != 0
    code, out, checkout = await clone(world, tmp_path / "c", world.token)
    assert code == 0, out
    (checkout / "x.txt").write_text("x\n")
    await git("add", "x.txt", cwd=checkout)
    await git("commit", "--quiet", "-m", "x", cwd=checkout)
    code, _ = await git("push", "--quiet", "origin", "HEAD:refs/heads/x", cwd=checkout)
    assert code != 0  # no token at all
    clock.advance(3601)  # installation tokens live one hour
    code, _ = await git("push", "--quiet", "origin", "HEAD:refs/heads/x", cwd=checkout, token=world.token)
    assert code != 0
    assert await world.emulator.git.ref_sha("octo-org", "hello", "refs/heads/x") is None
    fresh = (await world.emulator.create_token(world.installation_id)).token
    code, out = await git("push", "--quiet", "origin", "HEAD:refs/heads/x", cwd=checkout, token=fresh)
    assert code == 0, out


async def test_token_only_reaches_its_installation_repositories(world, tmp_path):
    em = world.emulator
    await em.create_repo("octo-org", "private-stuff", owner_type="Organization")
    code, _ = await git(
        "clone", "--quiet", em.clone_url("octo-org/private-stuff"), str(tmp_path / "p"), token=world.token
    )
    assert code != 0
    async with world.session.get(
        world.url("/repos/octo-org/private-stuff"), headers={"Authorization": f"token {world.token}"}
    ) as response:
        assert response.status == 404


async def test_conflicting_push_to_base_makes_the_pr_dirty(world):
    em = world.emulator
    await em.push_commit(world.repo, branch="feature", files={"README.md": "# feature\n"}, user="alice")
    pr = await em.open_pull(world.repo, head="feature", title="Feature", user="alice")
    gh = world.gh()
    em.mergeable_null_reads = 0  # the first read computes it
    assert (await gh.getitem(f"/repos/{world.repo}/pulls/{pr['number']}"))["mergeable"] is None
    await em.push_commit(world.repo, branch="main", files={"README.md": "# main changed\n"}, user="alice")
    assert (await gh.getitem(f"/repos/{world.repo}/pulls/{pr['number']}"))["mergeable"] is False
    em.mergeable_null_reads = 1
    await em.push_commit(world.repo, branch="main", files={"other.txt": "o\n"}, user="alice")
    first = await gh.getitem(f"/repos/{world.repo}/pulls/{pr['number']}")
    assert first["mergeable"] is None and first["mergeable_state"] == "unknown"
    second = await gh.getitem(f"/repos/{world.repo}/pulls/{pr['number']}")
    assert second["mergeable"] is False and second["mergeable_state"] == "dirty"
    assert second["base"]["sha"] == await em.git.ref_sha("octo-org", "hello", "main")
