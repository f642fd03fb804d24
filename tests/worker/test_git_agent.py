"""A checkout the agent may run git in (issue 12, item 3; SPEC §6.3): the checkout's ``.git``
is a repository of the agent's own, inside the checkout (so writable in the sandbox), reading
the cache's objects through alternates; the bot keeps its own git directory in the cache and
commits, checks and pushes the files the agent leaves, whatever the agent did to its ``.git``."""

from __future__ import annotations

import os

from bot.worker.guard import GuardPolicy

BRANCH = "patchwright/1-fix-it"
FAKE_GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2


async def test_the_checkout_has_a_git_directory_of_its_own(harness) -> None:
    co = await harness.checkout()
    own = co.path / ".git"
    assert own.is_dir() and not own.is_symlink()
    _, git_dir, _ = await harness.agent_git(co.path, "rev-parse", "--absolute-git-dir", "--git-common-dir")
    assert [(co.path / line).resolve() for line in git_dir.split()] == [own.resolve(), own.resolve()]
    # The bot's git directory is elsewhere (in the cache), and the agent's is no worktree of it.
    assert not co.admin_dir.is_relative_to(co.path)
    assert not (own / "commondir").exists() and not (own / "gitdir").exists()
    # Objects come from the cache, read through alternates: nothing is copied.
    alternates = (own / "objects" / "info" / "alternates").read_text().split()
    assert alternates == [str(co.shared_objects)]
    assert co.shared_objects == co.cache / "objects"
    assert not [p for p in (own / "objects").rglob("*") if p.is_file() and p.name != "alternates"]

    # What the agent sees: its branch at the attempt's start, nothing to commit, the base.
    _, status, _ = await harness.agent_git(co.path, "status", "--porcelain=v1", "--branch")
    assert status.splitlines() == [f"## {BRANCH}"]
    _, head, _ = await harness.agent_git(co.path, "rev-parse", "HEAD", "origin/main")
    assert head.split() == [co.start_sha, co.start_sha]
    _, log, _ = await harness.agent_git(co.path, "log", "--format=%H", "-1")
    assert log.strip() == co.start_sha


async def test_the_agent_commits_stashes_and_diffs_and_the_bot_pushes_the_files(harness) -> None:
    """Whatever the agent commits, stashes or leaves uncommitted, the bot pushes the files as
    they are in the checkout, in a commit of its own."""
    co = await harness.checkout()
    harness.write(co.path, {"src/app.py": "def greet():\n    return 'hello'\n", "new.txt": "created\n"})
    await harness.agent_git(co.path, "add", "-A")
    _, staged, _ = await harness.agent_git(co.path, "diff", "--cached", "--name-only")
    assert staged.split() == ["new.txt", "src/app.py"]
    await harness.agent_git(co.path, "commit", "-q", "-m", "agent: greet with hello")
    _, subject, _ = await harness.agent_git(co.path, "log", "-1", "--format=%s")
    assert subject.strip() == "agent: greet with hello"
    # A stash pushed and popped; a change left uncommitted; a file deleted with git rm.
    harness.write(co.path, {"docs/guide.md": "stashed\n"})
    await harness.agent_git(co.path, "stash", "-q")
    assert (co.path / "docs/guide.md").read_text() == harness.initial_files["docs/guide.md"]
    await harness.agent_git(co.path, "stash", "pop", "-q")
    await harness.agent_git(co.path, "rm", "-q", "README.md")
    harness.write(co.path, {"later.txt": "not committed by the agent\n"})
    _, diff, _ = await harness.agent_git(co.path, "diff", "HEAD", "--stat")
    assert "docs/guide.md" in diff and "README.md" in diff

    # The bot's own view is untouched by all that: its HEAD is still the start.
    assert await co.head() == co.start_sha
    assert (await harness.bot_git(co, "log", "-1", "--format=%H")).strip() == co.start_sha
    sha = await co.commit_all("Greet with hello")
    assert sha is not None
    assert (await harness.bot_git(co, "log", "-1", "--format=%an|%s|%P")).strip() == (
        f"{harness.bot[0]}|Greet with hello|{co.start_sha}"
    )
    result = await co.push(expected_remote=None, auth=harness.remote.auth)
    assert result.ok and await harness.remote.sha(BRANCH) == sha
    remote = harness.remote
    assert await remote.read(BRANCH, "src/app.py") == "def greet():\n    return 'hello'\n"
    assert await remote.read(BRANCH, "new.txt") == "created\n"
    assert await remote.read(BRANCH, "docs/guide.md") == "stashed\n"
    assert await remote.read(BRANCH, "later.txt") == "not committed by the agent\n"
    assert await remote.read(BRANCH, "README.md") is None
    tree = await harness.bot_git(co, "ls-tree", "-r", "--name-only", "HEAD")
    assert not [name for name in tree.split() if name == ".git" or name.startswith(".git/")]

    # A stash the agent keeps is not pushed: only the files are.
    again = await harness.checkout(fresh=False)
    harness.write(again.path, {"new.txt": "stashed away\n"})
    await harness.agent_git(again.path, "stash", "-q")
    assert await again.commit_all("nothing") is None


async def test_the_next_attempt_gets_a_new_git_directory_at_the_pushed_head(harness) -> None:
    co = await harness.checkout()
    harness.write(co.path, {"x.txt": "x\n"})
    await harness.agent_git(co.path, "add", "x.txt")
    await harness.agent_git(co.path, "commit", "-q", "-m", "agent")
    await harness.agent_git(co.path, "config", "alias.st", "status")
    sha = await co.commit_all("x")
    assert (await co.push(expected_remote=None, auth=harness.remote.auth)).ok
    again = await harness.checkout(fresh=False)
    _, head, _ = await harness.agent_git(again.path, "rev-parse", "HEAD", f"origin/{BRANCH}", "origin/main")
    assert head.split() == [sha, sha, co.start_sha]
    _, config, _ = await harness.agent_git(again.path, "config", "--list", "--local")
    assert "alias.st" not in config  # the agent's earlier git directory is gone
    rc, _, _ = await harness.agent_git(again.path, "status", "--porcelain", check=False)
    assert rc == 0


async def test_a_merge_in_progress_is_shown_to_the_agent_and_it_may_commit_it(harness) -> None:
    remote = harness.remote
    co = await harness.checkout()
    harness.write(co.path, {"src/app.py": "def greet():\n    return 'hello'\n"})
    first = await co.commit_all("First")
    assert (await co.push(expected_remote=None, auth=remote.auth)).ok
    on_main = await remote.human_commit("main", {"src/app.py": "def greet():\n    return 'hey'\n"})
    outcome = await co.merge_base(auth=remote.auth)
    assert not outcome.clean and outcome.conflicts == ("src/app.py",)

    _, unmerged, _ = await harness.agent_git(co.path, "diff", "--name-only", "--diff-filter=U")
    assert unmerged.split() == ["src/app.py"]
    _, merge_head, _ = await harness.agent_git(co.path, "rev-parse", "MERGE_HEAD", "HEAD")
    assert merge_head.split() == [on_main, first]
    harness.write(co.path, {"src/app.py": "def greet():\n    return 'hello, hey'\n"})
    await harness.agent_git(co.path, "add", "src/app.py")
    await harness.agent_git(co.path, "commit", "-q", "--no-edit")
    _, parents, _ = await harness.agent_git(co.path, "log", "-1", "--format=%P")
    assert parents.split() == [first, on_main]

    assert co.merge_in_progress()  # the bot's merge is its own, concluded by the bot
    sha = await co.conclude_merge()
    assert (await harness.bot_git(co, "log", "-1", "--format=%P")).split() == [first, on_main]
    result = await co.push(expected_remote=first, auth=remote.auth)
    assert result.ok and await remote.sha(BRANCH) == sha
    assert await remote.read(BRANCH, "src/app.py") == "def greet():\n    return 'hello, hey'\n"


async def test_what_the_agent_does_to_its_git_directory_changes_nothing_the_bot_pushes(harness) -> None:
    """The agent may corrupt or swap its index, refs and objects: the bot reads none of them.
    It commits the files in the checkout, checks exactly what it pushes, and pushes that."""
    co = await harness.checkout()
    own = co.path / ".git"
    clean = "def greet():\n    return 'hello'\n"
    harness.write(co.path, {"src/app.py": clean})
    # The agent commits a secret, then takes it out of the files: the secret is not pushed.
    harness.write(co.path, {"config.py": f"TOKEN = '{FAKE_GHP}'\n"})
    await harness.agent_git(co.path, "add", "-A")
    await harness.agent_git(co.path, "commit", "-q", "-m", "with a secret")
    (co.path / "config.py").unlink()
    # It swaps the object the bot's blob will have for other content, moves its branch and
    # HEAD, and garbles its index.
    wanted, _ = harness.loose_object("blob", clean.encode())
    _, evil = harness.loose_object("blob", b"def greet():\n    return 'evil'\n")
    target = own / "objects" / wanted[:2] / wanted[2:]
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.chmod(target, 0o644)
    target.write_bytes(evil)
    (own / "HEAD").write_text("ref: refs/heads/elsewhere\n")
    (own / "refs" / "heads" / "patchwright" / "1-fix-it").write_text("0" * 40 + "\n")
    (own / "index").write_bytes(b"DIRC garbage")

    sha = await co.commit_all("Greet")
    assert sha is not None
    assert await co.check_since(co.start_sha, GuardPolicy()) == []
    assert [c.path for c in await co.changes_since(co.start_sha)] == ["src/app.py"]
    assert (await co.push(expected_remote=None, auth=harness.remote.auth)).ok
    assert await harness.remote.sha(BRANCH) == sha
    assert await harness.remote.read(BRANCH, "src/app.py") == clean
    assert await harness.remote.read(BRANCH, "config.py") is None

    # A secret the agent committed cleanly and then wrote into the files is checked: what the
    # checks read is what would be pushed.
    harness.write(co.path, {"src/app.py": clean + f"TOKEN = '{FAKE_GHP}'\n"})
    await co.commit_all("Token")
    found = await co.check_since(sha, GuardPolicy())
    assert [v.path for v in found] == ["src/app.py"]


async def test_what_the_agent_writes_into_its_git_directory_counts_against_its_disk_limit(harness) -> None:
    from bot.worker.confinement import disk_usage_mb

    co = await harness.checkout()
    before = disk_usage_mb(co.path)
    (co.path / ".git" / "objects" / "pack" / "big.pack").write_bytes(b"\0" * 3 * 1024 * 1024)
    assert disk_usage_mb(co.path) - before >= 3
