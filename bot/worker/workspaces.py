"""The worker's cache repositories and per-task worktrees (SPEC §6.2): :class:`Workspaces`.

Layout under the data dir: one bare cache repository per GitHub repository
(``repos/<owner>/<name>.git``, remote branches under ``refs/remotes/origin/*``) and one
``git worktree`` per task (``work/<task_id>``), whose git directory stays in the cache. Each
worktree is handed out as a :class:`~bot.worker.checkout.Checkout`, with a repository of the
agent's own as its ``.git`` (see :func:`~bot.worker.git_files.make_agent_repository`).

Network commands run against the cache repository with the remote URL given explicitly, after
rewriting the cache's config, so nothing an agent writes into git config or a checkout's
``.git`` can redirect the token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from bot.tasks.branches import check_branch_name, check_task_id, split_repo

from .checkout import Checkout
from .git_files import _remove_tree, _write_file
from .git_parse import (
    cache_config_text,
    check_identity,
    check_remote_url,
    tracking_ref,
    worktrees_on_branch,
)
from .git_runner import GitRunner
from .git_values import (
    COMMAND_TIMEOUT,
    DEFAULT_SEARCH_PATH,
    EXCLUDE_TEXT,
    FETCH_REFSPEC,
    NETWORK_TIMEOUT,
    BranchNotFoundError,
    GitAuth,
    GitResult,
)

__all__ = ["Workspaces", "bot_identity"]


def bot_identity(app_slug: str, bot_user_id: int) -> tuple[str, str]:
    """The commit identity GitHub shows as the App's bot: ``("<slug>[bot]",
    "<id>+<slug>[bot]@users.noreply.github.com")``."""
    return f"{app_slug}[bot]", f"{bot_user_id}+{app_slug}[bot]@users.noreply.github.com"


class Workspaces:
    """Cache clones and per-task worktrees under ``data_dir``.

    ``identity`` is the (name, email) the bot commits as (see :func:`bot_identity`);
    ``extra_env`` may add operator settings such as ``HTTPS_PROXY`` (never ``GIT_*``).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        git: str = "git",
        identity: tuple[str, str],
        search_path: str = DEFAULT_SEARCH_PATH,
        extra_env: Mapping[str, str] | None = None,
        network_timeout: float = NETWORK_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.identity = check_identity(identity)
        self.runner = GitRunner(
            git=git,
            identity=self.identity,
            search_path=search_path,
            extra_env=extra_env,
            network_timeout=network_timeout,
            command_timeout=command_timeout,
        )
        self._locks: dict[str, asyncio.Lock] = {}

    def cache_path(self, repo: str) -> Path:
        owner, name = split_repo(repo)
        return self.data_dir / "repos" / owner / f"{name}.git"

    def worktree_path(self, task_id: str) -> Path:
        return self.data_dir / "work" / check_task_id(task_id)

    def repo_lock(self, repo: str) -> asyncio.Lock:
        """Serialises what writes shared state of one cache repository (fetch, worktrees)."""
        return self._locks.setdefault(repo.lower(), asyncio.Lock())

    async def checkout(
        self,
        *,
        repo: str,
        remote_url: str,
        auth: GitAuth,
        task_id: str,
        branch: str,
        base_branch: str,
        fresh: bool,
    ) -> Checkout:
        """Fetch the cache clone and create the task's worktree on ``branch``: new from
        ``origin/<base_branch>`` when ``fresh``, else exactly the remote branch, with a git
        repository of the agent's own as its ``.git`` (see
        :meth:`Checkout.prepare_agent_repository`). A leftover worktree of the same task is
        discarded first."""
        check_branch_name(branch)
        check_branch_name(base_branch)
        check_remote_url(remote_url)
        cache = self.cache_path(repo)
        path = self.worktree_path(task_id)
        async with self.repo_lock(repo):
            await self._prepare_cache(cache)
            await self.fetch(cache, remote_url, auth)
            await self._discard(cache, path)
            tips = await self.branch_tips(cache, [base_branch, branch])
            base_sha, remote_sha = tips.get(base_branch), tips.get(branch)
            if fresh:
                if base_sha is None:
                    raise BranchNotFoundError(
                        f"the base branch {base_branch!r} does not exist on the remote",
                        command="checkout",
                    )
                start = base_sha
            else:
                if remote_sha is None:
                    raise BranchNotFoundError(
                        f"the branch {branch!r} does not exist on the remote", command="checkout"
                    )
                start = remote_sha
            await self._discard_other_worktrees_of(cache, branch)
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            await self.runner.run(
                ["worktree", "add", "--quiet", "-B", branch, str(path), start], git_dir=cache
            )
            admin = await self._admin_dir(path)
        checkout = Checkout(
            workspaces=self,
            repo=repo,
            remote_url=remote_url,
            cache=cache,
            admin_dir=admin,
            path=path,
            branch=branch,
            base_branch=base_branch,
            start_sha=start,
            remote_sha=remote_sha,
        )
        await checkout.prepare_agent_repository(head=start, base_sha=base_sha)
        return checkout

    async def discard(self, *, repo: str, task_id: str) -> None:
        """Remove a task's worktree, if any (for cleanup without a :class:`Checkout`)."""
        cache = self.cache_path(repo)
        async with self.repo_lock(repo):
            await self._discard(cache, self.worktree_path(task_id))

    # -- shared steps ------------------------------------------------------------------------

    async def run_network(
        self, cache: Path, args: Sequence[str], auth: GitAuth, *, check: bool = True
    ) -> GitResult:
        """Run a network command against the cache repository with ``auth``, after rewriting
        its config (so no URL rewrite, proxy or helper planted there takes effect)."""
        await self._write_config(cache)
        return await self.runner.run(args, git_dir=cache, auth=auth, network=True, check=check)

    async def fetch(self, cache: Path, remote_url: str, auth: GitAuth) -> None:
        """Update ``refs/remotes/origin/*`` of the cache from ``remote_url`` (call under the
        repo lock)."""
        await self.run_network(
            cache,
            [
                "fetch",
                "--quiet",
                "--prune",
                "--no-tags",
                "--no-write-fetch-head",
                "--no-recurse-submodules",
                check_remote_url(remote_url),
                FETCH_REFSPEC,
            ],
            auth,
        )

    async def resolve(self, git_dir: Path, ref: str) -> str | None:
        """The commit ``ref`` names, or ``None``."""
        out = await self.runner.run(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
            git_dir=git_dir,
            check=False,
        )
        return out.text.strip() if out.returncode == 0 else None

    async def branch_tips(self, git_dir: Path, branches: Sequence[str]) -> dict[str, str]:
        """The commit each of ``branches`` points to on the remote (as last fetched), in one
        git call; branches the remote does not have are left out."""
        refs = {tracking_ref(branch): branch for branch in branches}
        out = await self.runner.run(
            ["for-each-ref", "--format=%(objecttype) %(objectname) %(refname)", "--end-of-options", *refs],
            git_dir=git_dir,
        )
        tips = {}
        for line in out.text.splitlines():
            kind, _, rest = line.partition(" ")
            sha, _, ref = rest.partition(" ")
            if kind == "commit" and ref in refs:
                tips[refs[ref]] = sha
        return tips

    async def _admin_dir(self, path: Path) -> Path:
        """A worktree's administrative directory, as its ``.git`` file names it."""
        try:
            text = await asyncio.to_thread((path / ".git").read_text)
        except OSError:
            text = ""
        named = Path(text.removeprefix("gitdir: ").strip())
        if text.startswith("gitdir: ") and named.is_absolute():
            return named
        out = await self.runner.run(["rev-parse", "--absolute-git-dir"], cwd=path)
        return Path(out.text.strip())

    async def _prepare_cache(self, cache: Path) -> None:
        if not (cache / "HEAD").is_file():
            await asyncio.to_thread(cache.parent.mkdir, parents=True, exist_ok=True)
            await self.runner.run(["init", "--quiet", "--bare", str(cache)])
        await asyncio.to_thread(_write_file, cache / "info" / "exclude", EXCLUDE_TEXT)

    async def _write_config(self, cache: Path) -> None:
        await asyncio.to_thread(_write_file, cache / "config", cache_config_text(self.identity))

    async def _discard_other_worktrees_of(self, cache: Path, branch: str) -> None:
        """Discard worktrees (of earlier tasks of the same issue) that hold ``branch``."""
        listing = await self.runner.run(["worktree", "list", "--porcelain", "-z"], git_dir=cache)
        work_root = (self.data_dir / "work").resolve()
        for path in worktrees_on_branch(listing.stdout, f"refs/heads/{branch}"):
            if path.resolve().parent == work_root:
                await self._discard(cache, path)

    async def _discard(self, cache: Path, path: Path) -> None:
        """Delete a worktree's files, then let git forget the worktree (``git worktree
        remove`` would refuse: its ``.git`` is the agent's repository, not a link)."""
        await asyncio.to_thread(_remove_tree, path)
        if (cache / "HEAD").is_file():
            await self.runner.run(["worktree", "prune"], git_dir=cache, check=False)
