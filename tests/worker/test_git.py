"""The worker's git operations against a real git remote over smart HTTP (SPEC §6.2, §6.5–§6.7)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.tasks.branches import (
    check_task_id,
    is_valid_branch_name,
    slugify,
    split_repo,
    task_branch,
    wip_branch,
)
from bot.worker.git import (
    BranchNotFoundError,
    GitAuth,
    GitCommandError,
    PushRefStatus,
    UnresolvedMergeError,
    Workspaces,
    AddedLinesParser,
    bot_identity,
    check_remote_url,
    config_env,
    conflict_marker_lines,
    parse_batch_sizes,
    parse_push_porcelain,
    parse_raw_diff,
    parse_raw_entries,
    parse_unmerged,
    summarize_stderr,
    worktrees_on_branch,
)

BRANCH = "patchwright/1-fix-it"

# -- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "title", "expected"),
    [
        (12, "Fix the login bug!", "patchwright/12-fix-the-login-bug"),
        (3, "Überprüfe das Café-Menü", "patchwright/3-uberprufe-das-cafe-menu"),
        (7, "🚀🚀", "patchwright/7"),
        (8, "  --Crash on / and ..  ", "patchwright/8-crash-on-and"),
        (9, "[Bug] `foo()` returns None", "patchwright/9-bug-foo-returns-none"),
    ],
)
def test_task_branch(number: int, title: str, expected: str) -> None:
    assert task_branch(number, title) == expected
    assert is_valid_branch_name(task_branch(number, title))


def test_task_branch_slug_is_short_and_has_no_trailing_dash() -> None:
    title = "Make the configuration loader accept a-b-c-d-e-f-g-h-i-j-k-l-m values"
    slug = task_branch(44, title).removeprefix("patchwright/44-")
    assert 0 < len(slug) <= 40
    assert not slug.endswith("-") and slug.isascii()
    assert slugify("a" * 39 + " b") == "a" * 39
    with pytest.raises(ValueError):
        task_branch(0, "x")


def test_wip_branch_and_name_checks() -> None:
    assert wip_branch("task_01j9", 3) == "patchwright/wip/task_01j9-3"
    for bad in ("../x", "", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            check_task_id(bad)
    with pytest.raises(ValueError):
        wip_branch("task_1", 0)
    assert is_valid_branch_name("feature/x-1")
    for bad in ("-x", "a..b", "a b", "a~1", "x.lock", "a/.b", "HEAD", "a@{1}", "a/", "a:b", "x\n"):
        assert not is_valid_branch_name(bad), bad
    assert split_repo("octo/demo") == ("octo", "demo")
    for bad in ("octo", "octo/../x", "a/b/c", "octo/demo.git"):
        with pytest.raises(ValueError):
            split_repo(bad)


def test_git_auth_hides_token_and_builds_header_config() -> None:
    auth = GitAuth("ghs_secretvalue")
    assert "ghs_secretvalue" not in repr(auth) and "ghs_secretvalue" not in str(auth)
    env = config_env(auth.config())
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert (
        env["GIT_CONFIG_VALUE_0"] == "Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hzX3NlY3JldHZhbHVl"
    )
    for bad in ("", "a\nb", "a\rb"):
        with pytest.raises(ValueError):
            GitAuth(bad)


def test_remote_url_must_not_carry_credentials() -> None:
    assert check_remote_url("https://github.com/o/r.git") == "https://github.com/o/r.git"
    for bad in (
        "https://x-access-token:abc@github.com/o/r.git",
        "https://abc@github.com/o/r.git",
        "ext::sh -c touch% /tmp/pwned",
        "ssh://git@github.com/o/r.git",
        "--upload-pack=touch",
    ):
        with pytest.raises(ValueError):
            check_remote_url(bad)


def test_parse_push_porcelain() -> None:
    out = (
        "To http://127.0.0.1:1/o/r.git\n"
        "!\tabc:refs/heads/b\t[rejected] (stale info)\n"
        "*\tdef:refs/heads/new\t[new branch]\n"
        "!\tfed:refs/heads/p\t[remote rejected] (pre-receive hook declined)\n"
        "Done\n"
    )
    stale = parse_push_porcelain(out, "refs/heads/b")
    assert stale == PushRefStatus("!", "[rejected] (stale info)", "stale info")
    assert stale.remote_moved and not stale.ok
    assert parse_push_porcelain(out, "refs/heads/new").ok
    declined = parse_push_porcelain(out, "refs/heads/p")
    assert declined is not None and not declined.ok and not declined.remote_moved
    assert parse_push_porcelain(out, "refs/heads/other") is None


def test_diff_parsers() -> None:
    raw = (
        b":100644 100644 aa bb M\0a.txt\0"
        b":000000 100644 00 cc A\0new file.txt\0"
        b":100644 100644 aa aa R100\0old.txt\0moved.txt\0"
    )
    assert parse_raw_diff(raw) == [
        ("M", None, "a.txt"),
        ("A", None, "new file.txt"),
        ("R", "old.txt", "moved.txt"),
    ]
    entries = parse_raw_entries(b":100644 100755 " + b"a" * 40 + b" " + b"b" * 40 + b" M\0a.txt\0")
    assert entries[0].new_mode == "100755" and entries[0].new_sha == "b" * 40
    assert parse_batch_sizes(b"bb 'blob' 12\n" + b"cc blob 7\ndd missing\nee tree 30\n") == {"cc": 7}
    patch = (
        b"diff --git a/a.txt b/a.txt\nindex aa..bb 100644\n--- a/a.txt\n+++ b/a.txt\n"
        b"@@ -1 +1,2 @@\n-old\n+new\n++plus\n\\ No newline at end of file\n"
        b"diff --git a/bin b/bin\nBinary files differ\n"
        b"diff --git a/c b/c\n--- a/c\n+++ b/c\n@@ -0,0 +1 @@\n+last"
    )
    for size in (1, 3, 7, len(patch)):  # however git's output is chunked
        files: list[list[bytes]] = []
        parser = AddedLinesParser(lambda: files.append([]), lambda data: files[-1].append(data))
        for start in range(0, len(patch), size):
            parser.feed(patch[start : start + size])
        parser.close()
        assert [b"".join(f) for f in files] == [b"new\n+plus\n", b"", b"last"], size
    assert conflict_marker_lines("a\n<<<<<<< HEAD\nx\n=======\ny\n>>>>>>> main\n") == 2
    assert conflict_marker_lines("Title\n=======\n<<<<<<<<< not a marker\n") == 0
    assert parse_unmerged(
        b"100644 aa 1\tx.txt\x00100644 bb 2\tx.txt\x00100644 cc 3\ty.txt\x00"
    ) == [
        "x.txt",
        "y.txt",
    ]
    assert summarize_stderr("hint: a\nfatal: boom\n") == "fatal: boom"
    listing = (
        b"worktree /d/repos/o/r.git\x00bare\x00\x00"
        b"worktree /d/work/t1\x00HEAD abc\x00branch refs/heads/patchwright/1-x\x00\x00"
        b"worktree /d/work/t2\x00HEAD def\x00detached\x00\x00"
    )
    assert worktrees_on_branch(listing, "refs/heads/patchwright/1-x") == [Path("/d/work/t1")]
    assert worktrees_on_branch(listing, "refs/heads/main") == []


def test_workspaces_refuse_git_variables_from_operators(tmp_path: Path) -> None:
    bot = ("app[bot]", "1+app[bot]@users.noreply.github.com")
    with pytest.raises(ValueError):
        Workspaces(tmp_path, identity=bot, extra_env={"GIT_TRACE_CURL": "1"})
    with pytest.raises(ValueError):
        Workspaces(tmp_path, identity=("bad\nname", "x@y"))
    assert Workspaces(tmp_path, identity=bot, extra_env={"HTTPS_PROXY": "http://proxy:3128"})
    assert bot_identity("patchwright", 41898282) == (
        "patchwright[bot]",
        "41898282+patchwright[bot]@users.noreply.github.com",
    )


# -- checkout, commit, push ----------------------------------------------------------------------


async def test_first_checkout_commit_push_and_continue(harness) -> None:
    remote = harness.remote
    main = await remote.sha("main")
    co = await harness.checkout()
    assert co.path == harness.data_dir / "work" / "task_01"
    assert (co.start_sha, co.remote_sha, co.branch) == (main, None, BRANCH)
    assert await co.head() == main
    assert (co.path / "README.md").read_text() == harness.initial_files["README.md"]
    assert (await harness.bot_git(co, "branch", "--show-current")).strip() == BRANCH

    assert await co.commit_all("nothing") is None
    harness.write(
        co.path, {".patchwright/signal.json": '{"status": "done"}', ".patchwright/prompt.md": "x"}
    )
    assert await co.commit_all("only state") is None
    assert not await co.has_diff_since(main)

    harness.write(co.path, {"src/app.py": "def greet():\n    return 'hello'\n", "NEW.md": "new\n"})
    assert await co.has_diff_since(main)
    sha = await co.commit_all("Fix greeting\n\n# Heading kept")
    assert sha is not None and sha != main
    log = await harness.bot_git(co, "log", "-1", "--format=%an <%ae>|%cn|%B")
    assert log.startswith(f"{harness.bot[0]} <{harness.bot[1]}>|{harness.bot[0]}|Fix greeting")
    assert "# Heading kept" in log
    tree = await harness.bot_git(co, "ls-tree", "-r", "--name-only", "HEAD")
    assert ".patchwright/signal.json" not in tree and "NEW.md" in tree

    result = await co.push(expected_remote=None, auth=remote.auth)
    assert result.ok and result.sha == sha and not result.rebased and result.error is None
    assert await remote.sha(BRANCH) == sha
    assert co.remote_sha == sha
    assert remote.auth_headers and set(remote.auth_headers) == {"Basic"}

    # The next attempt continues from the remote branch; the old worktree (with leftovers
    # from a "crashed" run) is discarded and recreated.
    harness.write(co.path, {"junk.txt": "left over\n"})
    again = await harness.checkout(fresh=False)
    assert again.path == co.path
    assert (again.start_sha, again.remote_sha) == (sha, sha)
    assert await again.head() == sha
    assert not (again.path / "junk.txt").exists()
    assert (again.path / "NEW.md").read_text() == "new\n"
    harness.write(again.path, {"NEW.md": "newer\n"})
    second = await again.commit_all("More")
    result = await again.push(expected_remote=sha, auth=remote.auth)
    assert result.ok and result.sha == second and await remote.sha(BRANCH) == second
    assert await remote.repos.is_ancestor("octo", "demo", sha, second)


async def test_branch_tips_and_admin_dir_match_what_git_says(harness) -> None:
    """The checkout reads both branch tips in one call and the worktree's admin directory
    from its .git file: the same answers as rev-parse, prefixes of branch names included."""
    co = await harness.checkout()
    harness.write(co.path, {"x.txt": "x\n"})
    sha = await co.commit_all("x")
    assert (await co.push(expected_remote=None, auth=harness.remote.auth)).ok
    cache = harness.workspaces.cache_path(harness.repo)
    await harness.workspaces.fetch(cache, harness.remote.url, harness.remote.auth)
    prefix = BRANCH.rsplit("-", 1)[0]  # a branch name that is a prefix of ours: not on the remote
    tips = await harness.workspaces.branch_tips(cache, ["main", BRANCH, prefix, "absent"])
    assert tips == {"main": await harness.remote.sha("main"), BRANCH: sha}
    # The bot's git directory is the worktree's in the cache (the checkout's .git is the agent's).
    assert co.admin_dir.parent == cache / "worktrees"
    assert (co.admin_dir / "gitdir").read_text().strip() == str(co.path / ".git")
    assert (await harness.bot_git(co, "rev-parse", "--git-common-dir")).strip() == str(cache)


async def test_checkout_of_missing_branches_fails_clearly(harness) -> None:
    with pytest.raises(BranchNotFoundError, match="does not exist on the remote"):
        await harness.checkout(fresh=False)
    with pytest.raises(BranchNotFoundError, match="'nope'"):
        await harness.workspaces.checkout(
            repo=harness.repo,
            remote_url=harness.remote.url,
            auth=harness.remote.auth,
            task_id="task_02",
            branch="patchwright/2-x",
            base_branch="nope",
            fresh=True,
        )


async def test_concurrent_checkouts_of_one_repo(harness) -> None:
    a, b = await asyncio.gather(
        harness.checkout(task_id="task_a", branch="patchwright/1-a"),
        harness.checkout(task_id="task_b", branch="patchwright/2-b"),
    )
    harness.write(a.path, {"a.txt": "a\n"})
    harness.write(b.path, {"b.txt": "b\n"})
    await asyncio.gather(a.commit_all("a"), b.commit_all("b"))
    ra, rb = await asyncio.gather(
        a.push(expected_remote=None, auth=harness.remote.auth),
        b.push(expected_remote=None, auth=harness.remote.auth),
    )
    assert ra.ok and rb.ok
    assert await harness.remote.read("patchwright/1-a", "a.txt") == "a\n"
    assert await harness.remote.read("patchwright/2-b", "a.txt") is None
    await a.remove()
    assert not a.path.exists() and b.path.exists()
    listing = await harness.bot_git(b, "worktree", "list", "--porcelain")
    assert str(a.path) not in listing and str(b.path) in listing


async def test_a_restarted_task_takes_over_its_branch(harness) -> None:
    old = await harness.checkout(task_id="task_old")
    new = await harness.checkout(task_id="task_new")
    assert not old.path.exists() and new.path.exists()
    assert (await harness.bot_git(new, "branch", "--show-current")).strip() == BRANCH


async def _pushed_branch(harness):
    """A checkout whose branch exists on the remote with one bot commit."""
    co = await harness.checkout()
    harness.write(co.path, {"src/app.py": "def greet():\n    return 'hello'\n"})
    first = await co.commit_all("First")
    assert (await co.push(expected_remote=None, auth=harness.remote.auth)).ok
    return co, first


async def test_push_rebases_bot_commits_onto_a_human_commit(harness) -> None:
    remote = harness.remote
    co, first = await _pushed_branch(harness)
    harness.write(co.path, {"NEW.md": "bot\n"})
    await co.commit_all("Bot work")
    human = await remote.human_commit(BRANCH, {"docs/human.md": "from a human\n"})

    result = await co.push(expected_remote=first, auth=remote.auth)
    assert result.ok and result.rebased and not result.merged
    head = await remote.sha(BRANCH)
    assert head == result.sha == await co.head()
    assert await remote.repos.is_ancestor("octo", "demo", human, head)
    info = await remote.repos.commit_info("octo", "demo", head)
    assert info.parents == (human,)  # rebased, linear history
    assert await remote.read(BRANCH, "NEW.md") == "bot\n"
    assert await remote.read(BRANCH, "docs/human.md") == "from a human\n"


async def test_push_falls_back_to_merge_when_the_rebase_conflicts(harness) -> None:
    remote = harness.remote
    co, first = await _pushed_branch(harness)
    # Two bot commits whose net effect leaves line 2 alone: replaying the first conflicts,
    # merging the end result does not.
    harness.write(co.path, {"docs/guide.md": "line one\nline TWO (bot)\nline three\n"})
    await co.commit_all("Change line two")
    harness.write(co.path, {"docs/guide.md": "line one\nline two\nline three\nline four\n"})
    await co.commit_all("Undo that, add line four")
    human = await remote.human_commit(
        BRANCH, {"docs/guide.md": "line one\nline 2 (human)\nline three\n"}
    )

    result = await co.push(expected_remote=first, auth=remote.auth)
    assert result.ok and result.rebased and result.merged
    head = await remote.sha(BRANCH)
    assert head == result.sha
    assert await remote.repos.is_ancestor("octo", "demo", human, head)
    assert (
        await remote.read(BRANCH, "docs/guide.md")
        == "line one\nline 2 (human)\nline three\nline four\n"
    )


async def test_push_reports_a_conflict_and_leaves_the_remote_alone(harness) -> None:
    remote = harness.remote
    co, first = await _pushed_branch(harness)
    harness.write(co.path, {"README.md": "# demo (bot)\n\nA demo project.\n"})
    bot_commit = await co.commit_all("Bot title")
    human = await remote.human_commit(BRANCH, {"README.md": "# demo (human)\n\nA demo project.\n"})

    result = await co.push(expected_remote=first, auth=remote.auth)
    assert not result.ok and result.sha is None
    assert result.conflicts == ("README.md",)
    assert "conflict" in (result.error or "") and "README.md" in (result.error or "")
    assert await remote.sha(BRANCH) == human
    assert await co.head() == bot_commit  # local work kept, no operation left in progress
    assert not co.merge_in_progress()
    assert (await harness.bot_git(co, "status", "--porcelain")).strip() == ""


async def test_push_recreates_a_branch_a_human_deleted(harness) -> None:
    co, first = await _pushed_branch(harness)
    harness.write(co.path, {"NEW.md": "x\n"})
    sha = await co.commit_all("More")
    assert await harness.remote.repos.delete_branch("octo", "demo", BRANCH)
    result = await co.push(expected_remote=first, auth=harness.remote.auth)
    assert result.ok and result.sha == sha and await harness.remote.sha(BRANCH) == sha


# -- salvage ------------------------------------------------------------------------------------


async def test_salvage_pushes_only_the_wip_branch(harness) -> None:
    remote = harness.remote
    co, first = await _pushed_branch(harness)
    fresh = await harness.checkout(fresh=False, task_id="task_01")
    assert await fresh.salvage(task_id="task_01", attempt=2, auth=remote.auth) is None
    assert "patchwright/wip/task_01-2" not in await remote.repos.branches("octo", "demo")

    harness.write(
        fresh.path, {"half.py": "def half(:\n", ".patchwright/signal.json": "{}", "README.md": None}
    )
    sha = await fresh.salvage(task_id="task_01", attempt=2, auth=remote.auth)
    assert sha is not None
    assert await remote.sha("patchwright/wip/task_01-2") == sha
    assert await remote.sha(BRANCH) == first  # the task branch is untouched
    assert await remote.read(sha, "half.py") == "def half(:\n"
    assert await remote.read(sha, "README.md") is None
    assert await remote.read(sha, ".patchwright/signal.json") is None
    # The worktree, its index and branch stay as they were.
    assert await fresh.head() == first
    status = await harness.bot_git(fresh, "status", "--porcelain")
    assert "?? half.py" in status and " D README.md" in status


async def test_salvage_saves_agent_commits_and_ends_a_merge(harness) -> None:
    remote = harness.remote
    co, first = await _pushed_branch(harness)
    await remote.human_commit("main", {"src/app.py": "def greet():\n    return 'hey'\n"})
    outcome = await co.merge_base(auth=remote.auth)
    assert not outcome.clean and co.merge_in_progress()
    harness.write(co.path, {"src/app.py": "def greet():\n    return 'half resolved'\n"})
    sha = await co.salvage(task_id="task_01", attempt=1, auth=remote.auth)
    assert sha is not None and not co.merge_in_progress()
    assert await remote.read(sha, "src/app.py") == "def greet():\n    return 'half resolved'\n"
    assert await remote.sha(BRANCH) == first

    # Commits the agent made itself are salvaged even when nothing is uncommitted.
    other = await harness.checkout(task_id="task_09", branch="patchwright/9-x")
    harness.write(other.path, {"x.txt": "x\n"})
    own = await other.commit_all("agent commit")
    assert await other.salvage(task_id="task_09", attempt=1, auth=remote.auth) == own


# -- merging the base branch --------------------------------------------------------------------


async def test_merge_base_clean_is_committed_and_pushed(harness) -> None:
    remote = harness.remote
    co, first = await _pushed_branch(harness)
    on_main = await remote.human_commit("main", {"docs/main-only.md": "main\n"})
    outcome = await co.merge_base(auth=remote.auth)
    assert outcome.clean and not outcome.up_to_date and outcome.conflicts == ()
    info = await harness.bot_git(co, "log", "-1", "--format=%P|%s")
    parents, subject = info.strip().split("|")
    assert parents.split() == [first, on_main]
    assert subject == f"Merge branch 'main' into {BRANCH}"
    result = await co.push(expected_remote=first, auth=remote.auth)
    assert result.ok and await remote.sha(BRANCH) == outcome.sha
    assert await remote.repos.is_ancestor("octo", "demo", on_main, BRANCH)

    again = await co.merge_base(auth=remote.auth)
    assert again.clean and again.up_to_date and again.sha == outcome.sha


async def test_merge_base_conflict_then_conclude(harness) -> None:
    remote = harness.remote
    co, first = await _pushed_branch(harness)
    harness.write(
        co.path, {"docs/guide.md": "line one\nline two\nline three\nmore\n", "README.md": "# bot\n"}
    )
    await co.commit_all("Bot edits")
    await remote.human_commit(
        "main",
        {
            "src/app.py": "def greet():\n    return 'hey'\n",
            "docs/guide.md": None,
            "docs/x.md": "x\n",
        },
    )
    outcome = await co.merge_base(auth=remote.auth)
    assert not outcome.clean and outcome.sha is None
    assert set(outcome.conflicts) == {"src/app.py", "docs/guide.md"}
    assert co.merge_in_progress()
    assert "<<<<<<<" in (co.path / "src/app.py").read_text()

    with pytest.raises(UnresolvedMergeError) as refused:
        await co.conclude_merge()
    assert "src/app.py" in str(refused.value) and "docs/guide.md" in str(refused.value)
    assert co.merge_in_progress()

    # Markers gone in one file; the modify/delete conflict is still untouched.
    harness.write(co.path, {"src/app.py": "def greet():\n    return 'hello, hey'\n"})
    with pytest.raises(UnresolvedMergeError) as refused:
        await co.conclude_merge()
    assert refused.value.paths == ("docs/guide.md",)

    harness.write(co.path, {"docs/guide.md": None})
    sha = await co.conclude_merge()
    assert not co.merge_in_progress()
    parents = (await harness.bot_git(co, "log", "-1", "--format=%P")).split()
    assert len(parents) == 2
    assert (await harness.bot_git(co, "status", "--porcelain")).strip() == ""
    result = await co.push(expected_remote=first, auth=remote.auth)
    assert result.ok and await remote.sha(BRANCH) == sha
    assert await remote.read(BRANCH, "src/app.py") == "def greet():\n    return 'hello, hey'\n"
    assert await remote.read(BRANCH, "docs/x.md") == "x\n"

    with pytest.raises(GitCommandError, match="no merge"):
        await (await harness.checkout(task_id="task_07", branch="patchwright/7-y")).conclude_merge()


async def test_commit_all_refuses_during_a_merge(harness) -> None:
    co, _ = await _pushed_branch(harness)
    await harness.remote.human_commit("main", {"src/app.py": "def greet():\n    return 'hey'\n"})
    assert not (await co.merge_base(auth=harness.remote.auth)).clean
    with pytest.raises(GitCommandError, match="conclude_merge"):
        await co.commit_all("x")


# -- diffs ---------------------------------------------------------------------------------------


async def test_changes_since_reports_files_and_added_text(harness) -> None:
    co = await harness.checkout()
    start = co.start_sha
    harness.write(
        co.path,
        {
            "added.txt": "first\nsecond\n",
            "src/app.py": "def greet():\n    return 'hello'\n",
            "README.md": None,
            "docs/moved.md": (co.path / "docs/guide.md").read_text(),
            "docs/guide.md": None,
            ".gitattributes": "secret.bin -diff\n",
            "secret.bin": "token = value\n",
        },
    )
    await co.commit_all("Changes")
    changes = {c.path: c for c in await co.changes_since(start)}
    assert changes["added.txt"].status == "A" and changes["added.txt"].size == len("first\nsecond\n")
    assert changes["src/app.py"].status == "M"
    assert changes["README.md"].status == "D" and changes["README.md"].size is None
    assert changes["docs/moved.md"].status == "R"
    assert changes["docs/moved.md"].old_path == "docs/guide.md"
    texts = {sink.path: "".join(sink.parts) for sink in await co.scan_since(start, _Collect)}
    assert texts["added.txt"] == "first\nsecond\n"
    assert texts["src/app.py"] == "    return 'hello'\n"
    assert texts["README.md"] == ""
    # Attributes cannot hide added text from the pre-push guard.
    assert texts["secret.bin"] == "token = value\n"
    assert await co.changes_since(await co.head()) == []
    assert await co.has_diff_since(start)
    assert not await co.has_diff_since(await co.head())


class _Collect:
    """A sink that keeps the text a file adds (for tests only: it is unbounded)."""

    def __init__(self, change) -> None:  # noqa: ANN001
        self.path = change.path
        self.wants_text = not change.status.startswith("D")
        self.parts: list[str] = []

    def feed(self, text: str) -> None:
        self.parts.append(text)
